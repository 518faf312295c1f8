import Testing
import Glibc
import BitsecCore

/// Size never silences an event: over-long text is cut by bytes at a character boundary and
/// named in `truncated`; refused events leave a coalesced `audit`/`event_rejected` record.
@Suite struct AuditLimitsTests {
    func records(_ path: String) throws -> [JSONValue] {
        try fileLines(path).map { line throws -> JSONValue in try JSONReader.parse(line, options: .init(maxBytes: 1 << 22, maxDepth: 40)) }
    }

    func str(_ v: JSONValue?) -> String? { v?.stringValue }

    @Test func overLongTextIsCutByBytesAtACharacterBoundary() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "max_event_bytes": 512"#))
        // "ab" + 3-byte characters: every limit (64, 256, 1024) falls inside a character.
        func long(_ n: Int) -> String { "ab\u{1}\n" + String(repeating: "€", count: n) }
        let limits: [(String, Int)] = [("reason", 1024), ("actor", 256), ("tenant", 256), ("user_agent", 1024),
                                       ("session_id", 256), ("resource", 1024), ("resource_id", 256),
                                       ("action", 64), ("data_classification", 64)]
        var members: [(key: String, value: JSONValue)] = [("type", .string("data_access")),
                                                          ("subtype", .string(String(repeating: "s", count: 200)))]
        for (name, n) in limits { members.append((name, .string(long(n)))) }
        let nested: JSONValue = .object(JSONObject([("deep", .array([.string(String(repeating: "é", count: 700))]))]))
        members.append(("details", .object(JSONObject([("request_id", .string("req-1")),
                                                       ("x", .string(String(repeating: "𝄞", count: 600))),
                                                       ("nested", nested)]))))
        let event = JSONWriter.serialize(.object(JSONObject(members)))
        let seq = try event.withRawBytes { (raw) throws(BitsecError) -> UInt64 in try a.emit(raw) }
        #expect(seq > 0)
        // Through an alias, and far beyond max_event_bytes (the event as received may be up to 1 MiB).
        let big = #"{"type": "session", "user_id": "\#(String(repeating: "ü", count: 400_000))"}"#
        #expect(try a.emit(big) > 0)
        try a.flush()
        rt.shutdown()
        let recs = try records("\(dir)/a.log")
        #expect(recs.count == 4)  // started, two events, stopped
        let r = recs[1]
        for (name, n) in limits {
            let v = try #require(str(r[name]), "\(name)")
            #expect(v.utf8.count <= n && v.utf8.count > n - 3, "\(name): \(v.utf8.count) bytes")
            #expect(long(n).hasPrefix(v), "\(name) is not a prefix of what was sent")
        }
        #expect(str(r["subtype"]) == String(repeating: "s", count: 64))
        let marks = try #require(r["truncated"]?.arrayValue).compactMap(\.stringValue)
        #expect(Set(marks) == Set(["subtype"] + limits.map(\.0) + ["details.x", "details.nested"]), "\(marks)")
        let details = try #require(r["details"])
        #expect(JSONWriter.serialize(details).count <= 512)
        #expect(str(details["request_id"]) == "req-1")
        let x = try #require(str(details["x"]))
        #expect(x.unicodeScalars.allSatisfy { $0 == "𝄞" } && !x.isEmpty)
        #expect(str(recs[2]["actor"])?.utf8.count == 256 && str(recs[2]["actor"])?.hasPrefix("üü") == true)
        #expect(recs[2]["truncated"]?.arrayValue?.compactMap(\.stringValue) == ["actor"])
        let report = try verify(["\(dir)/a.log"])
        #expect(report.intact && report.records == 4 && report.eventsRejected == 0)
        #expect(a.stats().metrics.rejected == 0)
    }

    /// The longest record the writer can produce is still read by the verifier: `details` up
    /// to the largest `max_event_bytes`, and beside it every text member at its limit, all of
    /// DEL (one byte as received, six as written). The verifier read lines of at most the
    /// event limit plus 4 KiB and reported this accepted record as edited, and every record
    /// after it as unverified.
    @Test func theLongestRecordTheWriterAcceptsIsVerified() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "max_event_bytes": 1048576"#))
        // (DEL raw in the event's JSON text, as JSON allows: one byte each as received)
        let del = "\u{7F}"
        let limits: [(String, Int)] = [("reason", 1024), ("actor", 256), ("tenant", 256), ("user_agent", 1024),
                                       ("session_id", 256), ("resource", 1024), ("resource_id", 256),
                                       ("action", 64), ("data_classification", 64)]
        var head = #"{"type":"data_access""#
        for (name, n) in limits { head += ",\"\(name)\":\"" + String(repeating: del, count: n) + "\"" }
        head += #","details":{"x":""#
        // details: as much as the event may carry as received (1 MiB in all), in plain text
        let room = 1_048_576 - head.utf8.count - 3
        let event = head + String(repeating: "a", count: room) + "\"}}"
        #expect(event.utf8.count == 1_048_576)
        #expect(try a.emit(event) > 0)
        #expect(try a.emit(#"{"type": "session", "subtype": "after"}"#) > 0)
        try a.flush()
        rt.shutdown()
        let longest = try fileLines("\(dir)/a.log").map(\.count).max() ?? 0
        #expect(longest > 1_048_576 + 4096, "the record is \(longest) bytes: no longer than the old limit")
        let report = try verify(["\(dir)/a.log"])
        #expect(report.intact, "\(report)")
        #expect(report.records == 4)
    }

    /// `ip` holds an address and nothing else: a NUL ended the C string the address check read,
    /// so "10.0.0.1" followed by a NUL and any text was accepted and written as the address.
    @Test func anAddressWithANulIsNotAnAddress() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", ""))
        expectError(.invalidArgument) { _ = try a.emit(#"{"type": "session", "subtype": "login", "ip": "10.0.0.1\u0000 evil"}"#) }
        #expect(try a.emit(#"{"type": "session", "subtype": "login", "ip": "10.0.0.1"}"#) > 0)
        try a.flush()
        rt.shutdown()
        let recs = try records("\(dir)/a.log")
        #expect(!recs.contains { str($0["ip"])?.contains("evil") == true })
    }

    @Test func aRefusedEventLeavesARecordWithoutItsContent() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log"))
        expectError(.invalidArgument, "unknown member 'password'") {
            _ = try a.emit(#"{"type": "session", "password": "hunter2-secret", "details": {"request_id": "req-42"}}"#)
        }
        // Invalid UTF-8 inside a string.
        var bad = Array(#"{"type": "session", "actor": "x"}"#.utf8)
        bad[bad.count - 3] = 0xFF
        expectError(.malformed, "UTF-8") { _ = try bad.withRawBytes { (raw) throws(BitsecError) -> UInt64 in try a.emit(raw) } }
        rt.shutdown()
        let text = fileLines("\(dir)/a.log").joined(separator: "\n")
        #expect(!text.contains("hunter2"))
        let recs = try records("\(dir)/a.log").filter { str($0["subtype"]) == "event_rejected" }
        #expect(recs.count >= 1 && recs.count <= 2)
        let first = try #require(recs.first)
        #expect(str(first["type"]) == "audit" && str(first["result"]) == "failure")
        #expect(str(first["reason"])?.contains("unknown member 'password'") == true)
        #expect(str(first["details"]?["request_id"]) == "req-42")
        #expect(str(first["details"]?["source"]) == "bitsec_audit_emit")
        #expect(str(first["details"]?["status"]) == "BITSEC_E_INVALID_ARGUMENT")
        #expect(recs.compactMap { $0["details"]?["count"]?.int64Value }.reduce(0, +) == 2)
        let report = try verify(["\(dir)/a.log"])
        #expect(report.intact && report.eventsRejected == 2)
        #expect(a.stats().metrics.rejected == 2)
    }

    @Test func aFloodOfRefusedEventsIsCoalesced() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "rejected_interval_ms": 3600000"#))
        let kinds = [#"{"type": "lunch"}"#, #"{"type": "session", "x": 1}"#, #"{"type": "session""#, "[]",
                     #"{"type": "session", "ip": "1.2.3"}"#]
        for k in 0..<10_000 {
            do { _ = try a.emit(kinds[k % kinds.count]); Issue.record("event \(k) accepted") } catch {}
        }
        #expect(try a.emit(#"{"type": "session"}"#) > 0)
        try a.flush()
        let recs = try records("\(dir)/a.log").filter { str($0["subtype"]) == "event_rejected" }
        #expect(recs.count == 2)  // the first one at once, one summary for the rest
        #expect(recs.last?["details"]?["coalesced"]?.boolValue == true)
        #expect(recs.compactMap { $0["details"]?["count"]?.int64Value }.reduce(0, +) == 10_000)
        let report = try verify(["\(dir)/a.log"])
        #expect(report.intact && report.eventsRejected == 10_000 && report.records == 4)
        // The next refusals are counted and summarised at close.
        for _ in 0..<3 { _ = try? a.emit("{}") }
        rt.shutdown()
        let after = try verify(["\(dir)/a.log"])
        #expect(after.intact && after.eventsRejected == 10_003 && after.records == 6)
        #expect(a.stats().metrics.rejected == 10_003)
        #expect(a.metricsText().contains(#"audit_events_total{event_subtype="event_rejected",result="failure"} 3"#))
    }
}
