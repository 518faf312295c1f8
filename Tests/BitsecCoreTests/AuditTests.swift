import Testing
import Glibc
import BitsecCore

/// A fresh private directory per test.
func auditTempDir() -> String {
    var template = Array("/tmp/bitsec-audit-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    return p.map { String(cString: $0) } ?? "/tmp"
}

/// Removes a test directory (flat: files only).
func removeTree(_ dir: String) {
    if let d = opendir(dir) {
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { unlink("\(dir)/\(name)") }
        }
        closedir(d)
    }
    rmdir(dir)
}

func fileLines(_ path: String) -> [String] {
    guard let bytes = try? readFile(path, limit: 1 << 30) else { return [] }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
}

func writeLines(_ path: String, _ lines: [String]) {
    let text = lines.map { $0 + "\n" }.joined()
    let fd = open(path, O_WRONLY | O_TRUNC | O_CREAT, 0o600)
    _ = text.withCString { write(fd, $0, strlen($0)) }
    close(fd)
}

func auditRuntime(_ section: String, top: String = "") throws -> (Runtime, AuditService) {
    let rt = try Runtime.open(config: #"{\#(top)"audit": \#(section)}"#)
    let a = try rt.require(rt.audit)
    return (rt, a)
}

func fileSection(_ path: String, _ extra: String = "", sinkExtra: String = "") -> String {
    #"{"sinks": [{"type": "file", "path": "\#(path)"\#(sinkExtra)}]\#(extra)}"#
}

func verify(_ paths: [String], key: SecretBytes? = nil) throws -> AuditVerifier.Report {
    try AuditVerifier.verify(paths: paths, key: key)
}

@Suite struct AuditSchemaTests {
    @Test func timestampsAreRFC3339WithMicroseconds() {
        // Checked against `date -u -d @1700000000`.
        #expect(RFC3339Probe.format(1) == "1970-01-01T00:00:00.000001Z")
        #expect(RFC3339Probe.format(1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z")
        #expect(RFC3339Probe.format(951_782_400_000_001) == "2000-02-29T00:00:00.000001Z")
    }

    @Test func badEventsAreRejectedWithReasons() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "max_event_bytes": 1024, "max_depth": 4"#))
        defer { rt.shutdown() }
        expectError(.malformed, "invalid JSON") { _ = try a.emit("{\"type\": ") }
        expectError(.malformed, "invalid JSON") { _ = try a.emit("") }
        expectError(.invalidArgument, "must be a JSON object") { _ = try a.emit("[]") }
        // Too large is cut down, not refused (AuditLimitsTests).
        #expect(try a.emit(#"{"type": "application", "details": {"x": "\#(String(repeating: "a", count: 2000))"}}"#) > 0)
        expectError(.malformed, "max_depth (4)") {
            _ = try a.emit(#"{"type": "application", "details": {"a": {"b": {"c": {"d": 1}}}}}"#)
        }
        expectError(.invalidArgument, "event.type is required") { _ = try a.emit(#"{"subtype": "login"}"#) }
        expectError(.invalidArgument, "not a known type") { _ = try a.emit(#"{"type": "lunch"}"#) }
        expectError(.invalidArgument, "reserved") { _ = try a.emit(#"{"type": "audit"}"#) }
        expectError(.invalidArgument, "unknown member 'colour'") { _ = try a.emit(#"{"type": "session", "colour": 1}"#) }
        expectError(.invalidArgument, "stamped by bitsec") { _ = try a.emit(#"{"type": "session", "seq": 1}"#) }
        expectError(.invalidArgument, "stamped by bitsec") { _ = try a.emit(#"{"type": "session", "time": "x"}"#) }
        expectError(.invalidArgument, "event.result must be one of") { _ = try a.emit(#"{"type": "session", "result": "meh"}"#) }
        expectError(.invalidArgument, "event.ip is not") { _ = try a.emit(#"{"type": "session", "ip": "1.2.3"}"#) }
        expectError(.invalidArgument, "given twice") { _ = try a.emit(#"{"type": "session", "user_id": "a", "actor": "b"}"#) }
        expectError(.invalidArgument, "contradicts") { _ = try a.emit(#"{"type": "session", "success": true, "result": "failure"}"#) }
        expectError(.invalidArgument, "details must be an object") { _ = try a.emit(#"{"type": "session", "details": 3}"#) }
        expectError(.invalidArgument, "event.actor must be a string") { _ = try a.emit(#"{"type": "session", "actor": 3}"#) }
        expectError(.malformed, "duplicate") { _ = try a.emit(#"{"type": "session", "type": "mfa"}"#) }
        #expect(a.stats().metrics.rejected == 17)
        // started, the cut-down event, the first event_rejected record (the others of the
        // interval are counted and summarised later: AuditLimitsTests).
        #expect(a.stats().lastSeq == 3)
    }

    @Test func documentsNamesAreMappedToTheSchema() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "service": "erp-api""#))
        _ = try a.emit(#"{"type": "login_failure", "user_id": "alice", "ip_address": "2001:db8::1", "user_agent": "curl/8"}"#)
        _ = try a.emit(#"{"type": "authentication", "event_subtype": "login", "success": true, "user_id": "bob"}"#)
        _ = try a.emit(#"{"type": "permission_denied", "resource": "inspections", "action": "delete"}"#)
        _ = try a.emit(#"{"type": "data_access", "operation": "read", "table_name_is_in": null, "sensitive_data_accessed": true, "data_classification": "confidential"}"#)
        _ = try a.emit(#"{"type": "security_violation", "severity": "high", "details": {"indicators": ["sqli"]}}"#)
        rt.shutdown()
        let lines = fileLines("\(dir)/a.log")
        #expect(lines.count == 7)  // started, five events, stopped
        #expect(lines[1].contains(#""type":"authentication","subtype":"failed_login","result":"failure","actor":"alice","ip":"2001:db8::1","user_agent":"curl/8","service":"erp-api""#))
        #expect(lines[2].contains(#""type":"authentication","subtype":"login","result":"success","actor":"bob""#))
        #expect(lines[3].contains(#""type":"authorization","subtype":"permission_denied","result":"denied","resource":"inspections","action":"delete""#))
        #expect(lines[4].contains(#""type":"data_access","subtype":"read","result":"unknown","action":"read","sensitive_data_accessed":true,"data_classification":"confidential""#))
        #expect(lines[5].contains(#""type":"security_incident","subtype":"security_violation","result":"failure","severity":"high""#))
        let m = a.metricsText()
        #expect(m.contains(#"authentication_events_total{event_subtype="failed_login",result="failure"} 1"#))
        #expect(m.contains(#"authentication_events_total{event_subtype="login",result="success"} 1"#))
        #expect(m.contains(#"authorization_events_total{event_subtype="permission_denied",result="denied"} 1"#))
        #expect(m.contains(#"data_access_events_total{event_subtype="read",result="unknown",sensitive_data_accessed="true"} 1"#))
        #expect(m.contains("# TYPE authentication_events_total counter"))
    }

    @Test func configurationErrorsNameTheField() {
        expectError(.config, "audit.sinks is required") { _ = try Runtime.open(config: #"{"audit": {}}"#) }
        expectError(.config, "only one file sink") {
            _ = try Runtime.open(config: #"{"audit": {"sinks": [{"type": "file", "path": "/tmp/x1"}, {"type": "file", "path": "/tmp/x2"}]}}"#)
        }
        expectError(.config, "needs the top-level redis section") {
            _ = try Runtime.open(config: #"{"audit": {"sinks": [{"type": "redis"}]}}"#)
        }
        expectError(.config, "unknown field audit.sinks[0].rotate") {
            _ = try Runtime.open(config: #"{"audit": {"sinks": [{"type": "stdout", "rotate": 1}]}}"#)
        }
        expectError(.config, "audit.durability must be one of") {
            _ = try Runtime.open(config: #"{"audit": {"sinks": [{"type": "stdout"}], "durability": "always"}}"#)
        }
        expectError(.config, "audit.extra_types") {
            _ = try Runtime.open(config: #"{"audit": {"sinks": [{"type": "stdout"}], "extra_types": ["authentication"]}}"#)
        }
        expectError(.config, "cannot open") {
            _ = try Runtime.open(config: #"{"audit": {"sinks": [{"type": "file", "path": "/nonexistent-dir/a.log"}]}}"#)
        }
    }

    @Test func extraTypesAreAccepted() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "extra_types": ["billing"]"#))
        defer { rt.shutdown() }
        #expect(try a.emit(#"{"type": "billing", "subtype": "refund", "result": "success"}"#) == 2)
    }
}

/// RFC3339 is internal; exercise it through a record's time in the public API instead.
enum RFC3339Probe {
    static func format(_ micros: Int64) -> String {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        guard let rt = try? Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/t.log"))}"#), let a = rt.audit else { return "" }
        let ok = Array(#"{"type": "session"}"#.utf8).withUnsafeBytes { raw in (try? a.emit(raw, at: micros)) != nil }
        rt.shutdown()
        guard ok, let line = fileLines("\(dir)/t.log").dropFirst().first,
              let r = line.firstRange(of: #""time":""#) else { return "" }
        return String(line[r.upperBound...].prefix(27))
    }
}

@Suite struct AuditChainTests {
    /// Writes a trail of `n` caller events (plus started/stopped) and returns its lines.
    func trail(_ dir: String, _ n: Int, key: String = "") throws -> [String] {
        let extra = key.isEmpty ? "" : #", "hmac_key": {"value": "\#(key)"}"#
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", extra), top: key.isEmpty ? "" : #""allow_inline_secrets": true, "#)
        for k in 0..<n { _ = try a.emit(#"{"type": "session", "subtype": "s\#(k)", "actor": "u\#(k)"}"#) }
        rt.shutdown()
        return fileLines("\(dir)/a.log")
    }

    @Test func intactTrailVerifies() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let lines = try trail(dir, 10)
        #expect(lines.count == 12)
        let r = try verify(["\(dir)/a.log"])
        #expect(r.intact)
        #expect(r.records == 12 && r.firstSeq == 1 && r.lastSeq == 12)
    }

    @Test func editIsDetectedAtTheRecord() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        var lines = try trail(dir, 10)
        lines[4] = lines[4].replacingOccurrences("\"actor\":\"u3\"", "\"actor\":\"u9\"")
        writeLines("\(dir)/a.log", lines)
        let r = try verify(["\(dir)/a.log"])
        #expect(r.problem?.kind == "edited")
        #expect(r.problem?.line == 5)
        #expect(r.problem?.seq == 5)
        #expect(r.records == 4)
    }

    @Test func deletionIsDetected() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        var lines = try trail(dir, 10)
        lines.remove(at: 6)
        writeLines("\(dir)/a.log", lines)
        let r = try verify(["\(dir)/a.log"])
        #expect(r.problem?.kind == "deleted")
        #expect(r.problem?.line == 7)
        #expect(r.problem?.seq == 7)
    }

    @Test func insertionIsDetected() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        var lines = try trail(dir, 10)
        // A forged line, and separately a replayed copy of an earlier record.
        var forged = lines
        forged.insert(#"{"seq":5,"type":"session","hash":"00"}"#, at: 4)
        writeLines("\(dir)/a.log", forged)
        var r = try verify(["\(dir)/a.log"])
        #expect(r.problem?.kind == "inserted")
        #expect(r.problem?.line == 5)
        lines.insert(lines[2], at: 8)
        writeLines("\(dir)/a.log", lines)
        r = try verify(["\(dir)/a.log"])
        #expect(r.problem?.kind == "inserted")
        #expect(r.problem?.line == 9)
        #expect(r.problem?.seq == 3)
    }

    @Test func swapIsDetectedAsReordering() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        var lines = try trail(dir, 10)
        lines.swapAt(3, 4)
        writeLines("\(dir)/a.log", lines)
        let r = try verify(["\(dir)/a.log"])
        #expect(r.problem?.kind == "reordered")
        #expect(r.problem?.line == 4)
        #expect(r.problem?.seq == 5)
    }

    @Test func rehashedEditIsCaughtByTheNextLinkOrTheKey() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let lines = try trail(dir, 5, key: "0123456789abcdef0123456789abcdef")
        let key = SecretBytes(Array("0123456789abcdef0123456789abcdef".utf8))
        #expect(try verify(["\(dir)/a.log"], key: key).intact)
        let unkeyed = try verify(["\(dir)/a.log"])
        #expect(unkeyed.problem?.kind == "edited" && unkeyed.problem?.line == 1)
        #expect(unkeyed.problem?.detail.contains("HMAC-keyed") == true)
        let wrong = try verify(["\(dir)/a.log"], key: SecretBytes(Array("fedcba9876543210fedcba9876543210".utf8)))
        #expect(!wrong.intact)
        _ = lines
    }

    @Test func restartContinuesTheChainAndTruncatesATornTail() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        _ = try trail(dir, 3)
        // A crash in the middle of a write leaves half a record.
        let fd = open("\(dir)/a.log", O_WRONLY | O_APPEND)
        _ = #"{"seq":6,"id":"x","time":"2026"#.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let torn = try verify(["\(dir)/a.log"])
        #expect(torn.intact && torn.tornTail?.bytes == 30)
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log"))
        #expect(try a.emit(#"{"type": "session"}"#) == 7)  // 6 = this run's started record
        rt.shutdown()
        let lines = fileLines("\(dir)/a.log")
        #expect(lines.count == 8)
        #expect(lines[5].contains(#""subtype":"started""#) && lines[5].contains(#""torn_bytes_truncated":30"#))
        #expect(lines[5].contains(#""recovered_seq":5"#))
        let r = try verify(["\(dir)/a.log"])
        #expect(r.intact && r.records == 8 && r.tornTail == nil)
    }

    @Test func aTamperedLastRecordRefusesToOpen() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        var lines = try trail(dir, 2)
        lines[lines.count - 1] = lines[lines.count - 1].replacingOccurrences("stopped", "stoppef")
        writeLines("\(dir)/a.log", lines)
        expectError(.config, "fails its hash check") { _ = try Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/a.log"))}"#) }
    }

    @Test func aFileHasOneWriter() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, _) = try auditRuntime(fileSection("\(dir)/a.log"))
        expectError(.config, "in use by another runtime") { _ = try Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/a.log"))}"#) }
        rt.shutdown()
        let (rt2, _) = try auditRuntime(fileSection("\(dir)/a.log"))
        rt2.shutdown()
    }

    @Test func aRuntimeDroppedWithoutShutdownReleasesItsWriter() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        do {
            let (_, a) = try auditRuntime(fileSection("\(dir)/a.log"))
            a.emitAutomatic(AutomaticAuditEvent(type: "key_management", subtype: "keys_reloaded", result: "success"))
        }
        // The writer thread notices it holds the last reference (it checks when idle) and
        // closes the file, so the file can be opened again.
        var reopened: Runtime? = nil
        for _ in 0..<100 where reopened == nil {
            reopened = try? Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/a.log"))}"#)
            if reopened == nil { usleep(50_000) }
        }
        #expect(reopened != nil)
        reopened?.shutdown()
        let lines = fileLines("\(dir)/a.log")
        #expect(lines.count == 2)
        #expect(lines.last?.contains(#""subtype":"keys_reloaded""#) == true)
        #expect(try verify(["\(dir)/a.log"]).intact)
    }

    @Test func filePermissionsAre0600() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        _ = try trail(dir, 1)
        var st = stat()
        stat("\(dir)/a.log", &st)
        #expect(st.st_mode & 0o777 == 0o600)
    }
}

@Suite struct AuditQueueTests {
    @Test func rotationUnderLoadLosesAndDuplicatesNothing() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "batch_max_events": 64"#, sinkExtra: #", "rotate_bytes": 20000"#))
        let threads = 4, per = 1500
        let box = ThreadBox(count: threads) { t in
            for i in 0..<per { _ = try? a.emit(#"{"type": "session", "actor": "t\#(t)-\#(i)"}"#) }
        }
        box.join()
        rt.shutdown()
        var files = [String]()
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name.hasPrefix("a.log") { files.append("\(dir)/\(name)") }
            }
            closedir(d)
        }
        #expect(files.count > 10)
        let r = try verify(files.shuffled())
        #expect(r.intact, "\(String(describing: r.problem))")
        #expect(r.records == threads * per + 2)
        var seen = Set<String>()
        var total = 0
        for f in files {
            for l in fileLines(f) {
                guard let at = l.firstRange(of: #""actor":""#) else { continue }
                let actor = String(l[at.upperBound...].prefix { $0 != "\"" })
                seen.insert(actor)
                total += 1
            }
            var st = stat()
            stat(f, &st)
            #expect(st.st_size <= 20000)
            #expect(st.st_mode & 0o777 == 0o600)
        }
        #expect(total == threads * per)
        #expect(seen.count == threads * per)
    }

    @Test func fullQueueUnderDropCountsExactlyTheDrops() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "queue_capacity": 100, "full_policy": "drop""#))
        _ = try a.emit(#"{"type": "session"}"#)
        try a.flush()
        a.pauseWriter()
        var accepted = 0, dropped = 0
        for _ in 0..<250 {
            if try a.emit(#"{"type": "session", "subtype": "burst"}"#) == 0 { dropped += 1 } else { accepted += 1 }
        }
        #expect(accepted == 100)
        #expect(dropped == 150)
        #expect(a.stats().metrics.dropped == 150)
        #expect(a.metricsText().contains("bitsec_audit_events_dropped_total 150"))
        a.resumeWriter()
        try a.flush()
        rt.shutdown()
        let lines = fileLines("\(dir)/a.log")
        #expect(lines.filter { $0.contains(#""subtype":"burst""#) }.count == 100)
        let report = lines.filter { $0.contains(#""subtype":"events_dropped""#) }
        #expect(report.count == 1)
        #expect(report.first?.contains(#""count":150"#) == true)
        #expect(try verify(["\(dir)/a.log"]).intact)
    }

    @Test func fullQueueUnderBlockTimesOut() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "queue_capacity": 2, "full_policy": "block", "block_timeout_ms": 20"#))
        _ = try a.emit(#"{"type": "session"}"#)
        try a.flush()
        a.pauseWriter()
        #expect(try a.emit(#"{"type": "session"}"#) > 0)
        #expect(try a.emit(#"{"type": "session"}"#) > 0)
        expectError(.timeout, "block_timeout_ms") { _ = try a.emit(#"{"type": "session"}"#) }
        #expect(a.stats().metrics.dropped >= 1)
        a.resumeWriter()
        rt.shutdown()
        #expect(try verify(["\(dir)/a.log"]).intact)
    }

    @Test func everyEventModeIsDurableOnReturnAndSharesFsyncs() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log", #", "durability": "every_event""#))
        let box = ThreadBox(count: 8) { t in
            for i in 0..<100 {
                guard let seq = try? a.emit(#"{"type": "session", "actor": "t\#(t)-\#(i)"}"#) else { continue }
                #expect(a.stats().durableSeq >= seq)
            }
        }
        box.join()
        let s = a.stats()
        #expect(s.metrics.written == 801)
        #expect(s.metrics.fsyncs <= s.metrics.written)
        rt.shutdown()
        #expect(try verify(["\(dir)/a.log"]).records == 802)
    }

    @Test func automaticEventsGoThroughTheHook() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log"))
        let hook: any AuditHook = a
        #expect(hook.automaticEventsEnabled)
        hook.emitAutomatic(AutomaticAuditEvent(type: "authorization", subtype: "permission_denied", result: "denied",
                                               reason: "no_grant", actor: "u1", tenant: "t1", resource: "inspections",
                                               action: "delete", details: [("role", .string("viewer"))]))
        rt.shutdown()
        let lines = fileLines("\(dir)/a.log")
        #expect(lines.count == 3)
        #expect(lines[1].contains(#""type":"authorization","subtype":"permission_denied","result":"denied","reason":"no_grant","actor":"u1","tenant":"t1","resource":"inspections","action":"delete","automatic":true,"details":{"role":"viewer"}"#))
        #expect(a.metricsText().contains(#"authorization_events_total{event_subtype="permission_denied",result="denied"} 1"#))

        let dir2 = auditTempDir()

        defer { removeTree(dir2) }
        let (rt2, b) = try auditRuntime(fileSection("\(dir2)/a.log", #", "automatic_events": false"#))
        #expect(!b.automaticEventsEnabled)
        b.emitAutomatic(AutomaticAuditEvent(type: "mfa", subtype: "totp_failed", result: "failure"))
        rt2.shutdown()
        #expect(fileLines("\(dir2)/a.log").isEmpty)
    }

    @Test func emitAfterShutdownIsClosed() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(fileSection("\(dir)/a.log"))
        _ = try a.emit(#"{"type": "session"}"#)
        rt.shutdown()
        expectError(.closed) { _ = try a.emit(#"{"type": "session"}"#) }
    }
}

@Suite struct AuditSinkTests {
    @Test func syslogSinkSendsRFC5424ToTheLocalSocket() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let path = "\(dir)/log.sock"
        let s = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(s) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (k, b) in bytes.enumerated() { raw[k] = b } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(rc == 0)
        let (rt, a) = try auditRuntime(#"{"sinks": [{"type": "file", "path": "\#(dir)/a.log"}, {"type": "syslog", "socket": "\#(path)", "facility": "authpriv", "app_name": "erp", "hostname": "h1"}]}"#)
        _ = try a.emit(#"{"type": "authentication", "subtype": "failed_login", "result": "failure", "actor": "alice"}"#)
        try a.flush()
        var got: [String] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        for _ in 0..<2 {
            let n = recv(s, &buf, buf.count, 0)
            if n > 0 { got.append(String(decoding: buf[0..<n], as: UTF8.self)) }
        }
        rt.shutdown()
        #expect(got.count == 2)
        let lines = fileLines("\(dir)/a.log")
        // authpriv (10) * 8 + info (6) = 86; + warning (4) = 84.
        #expect(got.first?.hasPrefix("<86>1 ") == true)
        #expect(got.last?.hasPrefix("<84>1 ") == true)
        #expect(got.last?.contains(" h1 erp \(getpid()) audit - ") == true)
        #expect(got.last?.hasSuffix(lines[1]) == true)
    }

    @Test func syslogOutageIsCountedAndTheFileUnaffected() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(#"{"sinks": [{"type": "file", "path": "\#(dir)/a.log"}, {"type": "syslog", "socket": "\#(dir)/nobody.sock"}]}"#)
        _ = try a.emit(#"{"type": "session"}"#)
        try a.flush()
        let s = a.stats()
        #expect((s.metrics.sinkErrors["syslog"] ?? 0) >= 1)
        #expect((s.metrics.sinkLost["syslog"] ?? 0) == 2)
        #expect(a.metricsText().contains(#"bitsec_audit_sink_errors_total{sink="syslog"}"#))
        rt.shutdown()
        #expect(fileLines("\(dir)/a.log").count == 3)
    }

    @Test func redisStreamSinkAgainstTheRealServer() throws {
        guard let port = TestRedis.port else { return }
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let stream = "audit-test-\(getpid())-\(Clock.nowMicros())"
        let (rt, a) = try auditRuntime(#"{"sinks": [{"type": "file", "path": "\#(dir)/a.log"}, {"type": "redis", "stream": "\#(stream)", "maxlen": 1000}]}"#,
                                       top: #""redis": {"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": 1000}, "#)
        for k in 0..<5 { _ = try a.emit(#"{"type": "session", "actor": "r\#(k)"}"#) }
        try a.flush()
        let pool = try rt.requireRedis()
        let entries = try pool.command("XRANGE", "bitsec:\(stream)", "-", "+").array ?? []
        #expect(entries.count == 6)
        let lines = fileLines("\(dir)/a.log")
        for (k, e) in entries.enumerated() {
            let fields = e.array?.last?.array ?? []
            #expect(fields.count == 4)
            #expect(fields.first?.text == "seq" && fields[1].text == String(k + 1))
            #expect(fields.last?.text == lines[k])
        }
        _ = try pool.command("DEL", "bitsec:\(stream)")
        rt.shutdown()
    }

    @Test func redisOutageIsCountedNotFatal() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, a) = try auditRuntime(#"{"sinks": [{"type": "file", "path": "\#(dir)/a.log"}, {"type": "redis"}]}"#,
                                       top: #""redis": {"host": "127.0.0.1", "port": \#(closedPort()), "connect_timeout_ms": 100}, "#)
        _ = try a.emit(#"{"type": "session"}"#)
        try a.flush()
        #expect((a.stats().metrics.sinkErrors["redis"] ?? 0) >= 1)
        rt.shutdown()
        #expect(try verify(["\(dir)/a.log"]).records == 3)
    }
}

/// Runs `count` pthreads and joins them (the library's tests avoid Dispatch too).
final class ThreadBox: @unchecked Sendable {
    private var threads: [pthread_t] = []
    private let body: @Sendable (Int) -> Void

    init(count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        self.body = body
        for k in 0..<count {
            var t = pthread_t()
            let ctx = Unmanaged.passRetained(Job(box: self, index: k)).toOpaque()
            pthread_create(&t, nil, { arg in
                guard let arg else { return nil }
                let job = Unmanaged<Job>.fromOpaque(arg).takeRetainedValue()
                job.box.body(job.index)
                return nil
            }, ctx)
            threads.append(t)
        }
    }

    func join() { for t in threads { pthread_join(t, nil) } }

    final class Job {
        let box: ThreadBox
        let index: Int
        init(box: ThreadBox, index: Int) { self.box = box; self.index = index }
    }
}

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        var out = ""
        var rest = self[...]
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound]
            out += b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

@Suite struct AuditFastPathTests {
    @Test func fastScannerTakesTheCommonCase() {
        #expect(AuditScannerProbe.takes(Array(#"{"type":"authentication","subtype":"failed_login","user_id":"u","ip_address":"10.0.0.1","success":false,"details":{"a":[1,{"b":"\"x\""}]}}"#.utf8)))
        #expect(!AuditScannerProbe.takes(Array(#"{"type":"auth\u0065ntication"}"#.utf8)))  // escapes: strict path
        #expect(!AuditScannerProbe.takes(Array(#"{"type":"session","type":"mfa"}"#.utf8)))
    }

    @Test func fastScannerAndStrictPathAgree() {
        var cases: [String] = [
            // details the record copies as they are, and near misses the reader must judge
            #"{"type":"data_access","details":{"request_id":"r-1","method":"GET","path":"/a/é/日","status":200,"path_params":{"eid":"5"}}}"#,
            #"{"type":"data_access","details":{"a":-0}}"#, #"{"type":"data_access","details":{"a":0,"b":-12,"c":123456789012345678}}"#,
            #"{"type":"data_access","details":{"a":1234567890123456789}}"#, #"{"type":"data_access","details":{"a":1.0,"b":1e2}}"#,
            #"{"type":"data_access","details":{"a":01}}"#, #"{"type":"data_access","details":{"a":"x","a":"y"}}"#,
            #"{"type":"data_access","details":{"a":{"b":{"a":1}},"b":[true,false,null,[],{}]}}"#,
            #"{"type":"data_access","details":{"a":"\u0041","b":"tab\there"}}"#, #"{"type":"data_access","details":{ "a":1}}"#,
            #"{"type":"data_access","details":{"a":[1,2,]}}"#, #"{"type":"data_access","details":{"a":tru}}"#,
            #"{"type":"data_access","details":{"a":nul,"b":1}}"#, #"{"type":"data_access","details":{"a":fals}}"#,
            #"{"type":"data_access","details":{"a":[[[[[[[[[1]]]]]]]]]}}"#, #"{"type":"data_access","details":{"a":[[[[[[1]]]]]]}}"#,
            #"{"type":"data_access","details":{"a":[[[[[[[1]]]]]]]}}"#, #"{"type":"data_access","details":{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}}"#,
            #"{"type":"data_access","details":{"":"","x":""}}"#, #"{"type":"data_access","details":{"k":"\#u{7F}"}}"#,
            #"{"type":"data_access","details":{"k":"\#u{1}"}}"#, #"{"type":"data_access","details":{"k":-}}"#,
            #"{"type":"login_failure","user_id":"alice","ip_address":"2001:db8::1"}"#,
            #"{"type":"authentication","event_subtype":"login","success":true}"#,
            #"{"type":"authentication","success":true,"result":"failure"}"#,
            #"{"type":"data_access","operation":"read","sensitive_data_accessed":true}"#,
            #"{"type":"session","ip":"1.2.3"}"#,
            #"{"type":"session","result":"meh"}"#,
            #"{"type":"session","severity":"high","subtype":"bad\u0001"}"#,
            #"{"type":"nope"}"#,
            #"{"type":"audit"}"#,
            #"{"subtype":"x"}"#,
            #"{"type":"session","details":{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":1}}}}}}}}}"#,
            #"{"type":"session","details":{"k":1,"k":2}}"#,
            #"{"type":"session","details":[1]}"#,
            #"{"type":"session","actor":"\#(String(repeating: "a", count: 300))"}"#,
            #"{"type":"session","subtype":"with space"}"#,
            #"{"type":"session","resource":"x\#u{7F}y"}"#,
            #" { "type" : "session" , "actor" : "ünï" } "#,
            #"{"type":"session"} x"#,
        ]
        // Every field, in a shuffled order.
        let members = [#""type":"authorization""#, #""result":"denied""#, #""reason":"r""#, #""actor":"a""#, #""tenant_id":"t""#,
                       #""ip":"::1""#, #""user_agent":"ua""#, #""session_id":"s""#, #""resource":"res""#, #""resource_id":"7""#,
                       #""action":"delete""#, #""data_classification":"internal""#, #""severity":"low""#, #""details":{"x":[true,null,1.5]}"#]
        for _ in 0..<50 { cases.append("{" + members.shuffled().joined(separator: ",") + "}") }
        for c in cases {
            #expect(AuditScannerProbe.agree(Array(c.utf8)), "\(c)")
        }
        // Invalid UTF-8 inside a details string: never copied as it is.
        var bad = Array(#"{"type":"data_access","details":{"k":"a"#.utf8)
        bad += [0xC3, 0x28]
        bad += Array(#""}}"#.utf8)
        #expect(AuditScannerProbe.agree(bad))
        #expect(!AuditScannerProbe.keepsDetailsAsWritten(bad))
    }

    @Test func canonicalDetailsAreCopiedAsWritten() {
        let common = #"{"type":"data_access","action":"read","resource":"/api/v1/equipment/{eid}","result":"success","resource_id":"5","actor":"u","ip":"127.0.0.1","user_agent":"wrk","details":{"request_id":"0f2c","method":"GET","path":"/api/v1/equipment/5","status":200,"path_params":{"eid":"5"}}}"#
        #expect(AuditScannerProbe.keepsDetailsAsWritten(Array(common.utf8)))
        #expect(AuditScannerProbe.agree(Array(common.utf8)))
        for near in [#"{"type":"session","details":{"a":1.5}}"#, #"{"type":"session","details":{"a":"\n"}}"#,
                     #"{"type":"session","details":{"a": 1}}"#, #"{"type":"session","details":{"a":1,"a":1}}"#] {
            #expect(!AuditScannerProbe.keepsDetailsAsWritten(Array(near.utf8)), "\(near)")
        }
    }
}

@Suite struct RuntimeOpenFailureTests {
    /// A configuration whose audit section is valid but whose later section is not: the audit
    /// capability that was already built is shut down at once, so its file (one writer per
    /// file) is free for the next runtime and its trail ends cleanly and verifies.
    @Test func capabilitiesBuiltBeforeAFailingSectionAreShutDown() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let path = dir + "/audit.jsonl"
        expectError(.config, "unknown field tokenz") {
            _ = try Runtime.open(config: #"{"audit": \#(fileSection(path)), "tokenz": {}}"#)
        }
        let (rt, a) = try auditRuntime(fileSection(path))
        _ = a
        rt.shutdown()
        let report = try verify([path])
        #expect(report.intact)
    }
}

/// Several runtimes on one shared file (the in-process stand-in for several worker
/// processes; the multi-process tests are in the Python suite, test_audit_multiprocess.py).
@Suite struct AuditSharedFileTests {
    private func auditFiles(_ dir: String) -> [String] {
        var files = [String]()
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name.hasPrefix("a.log") && !name.hasSuffix(".shm") { files.append("\(dir)/\(name)") }
            }
            closedir(d)
        }
        return files
    }

    @Test func runtimesSharingAFileWriteOneChainAcrossRotations() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let section = fileSection("\(dir)/a.log", #", "batch_max_events": 64"#, sinkExtra: #", "shared": true, "rotate_bytes": 20000"#)
        let runtimes = try (0..<3).map { _ in try auditRuntime(section) }
        let per = 1000
        let box = ThreadBox(count: 3) { t in
            for i in 0..<per { _ = try? runtimes[t].1.emit(#"{"type": "session", "actor": "t\#(t)-\#(i)"}"#) }
        }
        box.join()
        for (rt, _) in runtimes { rt.shutdown() }
        let files = auditFiles(dir)
        #expect(files.count > 10)
        let r = try verify(files.shuffled())
        #expect(r.intact, "\(String(describing: r.problem))")
        #expect(r.firstSeq == 1)
        #expect(r.records == 3 * per + 6)  // a started and a stopped record per runtime
        var actors: [String] = []
        for f in files {
            for l in fileLines(f) {
                guard let at = l.firstRange(of: #""actor":""#) else { continue }
                actors.append(String(l[at.upperBound...].prefix { $0 != "\"" }))
            }
            var st = stat()
            stat(f, &st)
            #expect(st.st_size <= 20000)
        }
        #expect(actors.count == 3 * per)
        #expect(Set(actors).count == 3 * per)
        var st = stat()
        #expect(stat("\(dir)/a.log.shm", &st) == 0 && st.st_mode & 0o777 == 0o600)
    }

    @Test func aSharedTrailContinuesAfterEveryRuntimeClosed() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let section = fileSection("\(dir)/a.log", #", "durability": "every_event""#, sinkExtra: #", "shared": true"#)
        let (rt1, a1) = try auditRuntime(section)
        #expect(try a1.emit(#"{"type": "session"}"#) == 2)  // after the started record
        rt1.shutdown()
        // The head in the sidecar and the file agree: the next runtime continues the chain.
        let (rt2, a2) = try auditRuntime(section)
        #expect(try a2.emit(#"{"type": "session"}"#) == 5)
        rt2.shutdown()
        // A file replaced by hand no longer matches the head: it is rebuilt from the file.
        let lines = fileLines("\(dir)/a.log")
        unlink("\(dir)/a.log")
        writeLines("\(dir)/a.log", Array(lines.prefix(3)))
        let (rt3, a3) = try auditRuntime(section)
        #expect(try a3.emit(#"{"type": "session"}"#) == 5)
        rt3.shutdown()
        #expect(try verify(["\(dir)/a.log"]).intact)
    }

    @Test func sharedAndUnsharedRuntimesDoNotMix() throws {
        let dir = auditTempDir()
        defer { removeTree(dir) }
        let (rt, _) = try auditRuntime(fileSection("\(dir)/a.log", sinkExtra: #", "shared": true"#))
        expectError(.config, #"set "shared": true"#) { _ = try Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/a.log"))}"#) }
        rt.shutdown()
        let (rt2, _) = try auditRuntime(fileSection("\(dir)/a.log"))
        expectError(.config, "does not share it") {
            _ = try Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/a.log", sinkExtra: #", "shared": true"#))}"#)
        }
        rt2.shutdown()
        // Every runtime on a shared chain chains with the same function.
        let keyed = #"{"allow_inline_secrets": true, "audit": \#(fileSection("\(dir)/c.log", #", "hmac_key": {"value": "0123456789abcdef0123"}"#, sinkExtra: #", "shared": true"#))}"#
        let rk = try Runtime.open(config: keyed)
        expectError(.config, "needs the same hmac_key") {
            _ = try Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/c.log", sinkExtra: #", "shared": true"#))}"#)
        }
        let rk2 = try Runtime.open(config: keyed)
        rk2.shutdown()
        rk.shutdown()
        expectError(.config, "must be a boolean") {
            _ = try Runtime.open(config: #"{"audit": \#(fileSection("\(dir)/b.log", sinkExtra: #", "shared": 1"#))}"#)
        }
    }
}
