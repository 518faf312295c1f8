// The audit capability through the exported C functions only.
import Testing
import Glibc
import Bitsec

private let E_MALFORMED = BitsecABI.BITSEC_E_MALFORMED, E_TIMEOUT = BitsecABI.BITSEC_E_TIMEOUT
private let E_UNSUPPORTED = BitsecABI.BITSEC_E_UNSUPPORTED

private func emit(_ rt: OpaquePointer?, _ event: String) -> (Int32, UInt64) {
    var seq: UInt64 = 99
    let rc = event.withCString { bitsec_audit_emit(rt, $0, UInt(strlen($0)), &seq) }
    return (rc, seq)
}

private func text(_ fn: (UnsafeMutablePointer<CChar>?, UInt, UnsafeMutablePointer<UInt>?) -> Int32) -> (Int32, String) {
    var need: UInt = 0
    let rc0 = fn(nil, 0, &need)
    guard rc0 == E_BUFFER else { return (rc0, "") }
    var buf = [CChar](repeating: 0, count: Int(need) + 1)
    var len: UInt = 0
    let rc = fn(&buf, UInt(buf.count), &len)
    return (rc, String(decoding: buf.prefix(Int(len)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

private func verifyJSON(_ paths: String, key: [UInt8] = []) -> (Int32, String) {
    text { out, cap, len in
        paths.withCString { p in
            key.withUnsafeBufferPointer { k in bitsec_audit_verify(p, UInt(strlen(p)), k.baseAddress, UInt(k.count), out, cap, len) }
        }
    }
}

/// bitsec_audit_submit of `events` (their texts back to back, one length each).
private func submit(_ rt: OpaquePointer?, _ events: [[UInt8]]) -> (Int32, UInt) {
    let data = events.flatMap { $0 }
    let lengths = events.map { UInt($0.count) }
    var accepted: UInt = 99
    let rc = data.withUnsafeBufferPointer { d in
        d.withMemoryRebound(to: CChar.self) { c in
            lengths.withUnsafeBufferPointer { l in
                bitsec_audit_submit(rt, c.baseAddress, UInt(c.count), l.baseAddress, UInt(l.count), &accepted)
            }
        }
    }
    return (rc, accepted)
}

private func lines(_ path: String) -> [String] {
    let fd = open(path, O_RDONLY)
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 { break }
        out += buf.prefix(n)
    }
    return String(decoding: out, as: UTF8.self).split(separator: "\n").map(String.init)
}

@Suite struct AuditABITests {
    @Test func notConfiguredAndNullArguments() {
        let (rc, rt) = open("{}")
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        #expect(emit(rt, #"{"type": "session"}"#).0 == E_NOT_CONFIGURED)
        #expect(bitsec_audit_flush(rt) == E_NOT_CONFIGURED)
        #expect(bitsec_audit_emit(nil, "{}", 2, nil) == E_INVALID)
        #expect(bitsec_audit_flush(nil) == E_INVALID)
        // Without an audit section the metrics text is not an error: it holds only the count
        // of ABI calls, which every runtime keeps.
        let (mrc, m) = text { bitsec_metrics_text(rt, $0, $1, $2) }
        #expect(mrc == E_BUFFER || mrc == OK)
        #expect(m.split(separator: "\n").allSatisfy { $0.contains("bitsec_abi_calls_total") })
        var len: UInt = 0
        #expect(bitsec_audit_verify(nil, 5, nil, 0, nil, 0, &len) == E_INVALID)
        #expect(bitsec_audit_verify("[]", 2, nil, 0, nil, 0, &len) == E_INVALID)
        #expect(bitsec_audit_verify("{}", 2, nil, 0, nil, 0, &len) == E_MALFORMED)
        #expect(bitsec_audit_verify(#"["/nonexistent/x.log"]"#, 22, nil, 0, nil, 0, &len) == 10)
    }

    @Test func emitFlushStatsMetricsVerify() {
        let dir = makeTempDir("audit-abi")
        defer { removeTempDir(dir) }
        let (rc, rt) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/a.log"}], "durability": "batched"}}"#)
        #expect(rc == OK)
        let (e1, s1) = emit(rt, #"{"type": "authorization", "result": "denied", "actor": "u1", "resource": "reports", "action": "delete"}"#)
        #expect(e1 == OK && s1 == 2)
        let (e2, s2) = emit(rt, #"{"type": "nonsense"}"#)
        #expect(e2 == E_INVALID && s2 == 0)
        #expect(lastError().contains("not a known type"))
        var seq: UInt64 = 7
        #expect(bitsec_audit_emit(rt, nil, 3, &seq) == E_INVALID && seq == 0)
        #expect(bitsec_audit_emit(rt, "x", UInt.max, &seq) == E_TOO_LARGE)
        #expect(bitsec_audit_emit(rt, "{\"type\": ", 9, &seq) == E_MALFORMED)
        #expect(bitsec_audit_flush(rt) == OK)
        let (src, stats) = text { bitsec_audit_stats(rt, $0, $1, $2) }
        #expect(src == OK)
        // Refused events leave records: event_rejected (seq 3) and, at the flush, the summary
        // of the two refused after it in the same interval (seq 4). A NULL event is an
        // argument error, not an event: neither counted nor recorded.
        #expect(stats.contains(#""durable_seq":4"#) && stats.contains(#""rejected":3"#))
        let (mrc, m) = text { bitsec_metrics_text(rt, $0, $1, $2) }
        #expect(mrc == OK)
        #expect(m.contains(#"authorization_events_total{event_subtype="none",result="denied"} 1"#))
        bitsec_runtime_close(rt)
        #expect(emit(rt, #"{"type": "session"}"#).0 == E_CLOSED)
        let (vrc, report) = verifyJSON(#"["\#(dir)/a.log"]"#)
        #expect(vrc == OK)
        #expect(report.hasPrefix(#"{"intact":true,"records":5,"#) && report.contains(#""events_rejected":3"#))
        let (krc, keyed) = verifyJSON(#"["\#(dir)/a.log"]"#, key: Array("0123456789abcdef".utf8))
        #expect(krc == OK && keyed.contains(#""intact":false"#) && keyed.contains(#""kind":"edited""#))
    }

    @Test func oversizedAndOverLongEventsAreNotSilenced() {
        let dir = makeTempDir("audit-abi")
        defer { removeTempDir(dir) }
        let (_, rt) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/a.log"}], "max_event_bytes": 256}}"#)
        // More than BITSEC_AUDIT_MAX_EVENT_BYTES: refused, and the refusal is in the chain.
        let huge = [CChar](repeating: 0x20, count: (1 << 20) + 1)
        var seq: UInt64 = 9
        #expect(bitsec_audit_emit(rt, huge, UInt(huge.count), &seq) == E_TOO_LARGE && seq == 0)
        // Over-long text and details: recorded, cut down.
        let (rc, s) = emit(rt, #"{"type": "session", "user_agent": "\#(String(repeating: "ä", count: 3000))", "details": {"k": "\#(String(repeating: "z", count: 5000))"}}"#)
        #expect(rc == OK && s == 3)
        bitsec_runtime_close(rt)
        let (_, report) = verifyJSON(#"["\#(dir)/a.log"]"#)
        #expect(report.hasPrefix(#"{"intact":true,"records":4,"#) && report.contains(#""events_rejected":1"#))
        let fd = open("\(dir)/a.log", O_RDONLY)
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        let n = read(fd, &buf, buf.count)
        close(fd)
        let text = String(decoding: buf.prefix(max(0, n)), as: UTF8.self)
        #expect(text.contains(#""subtype":"event_rejected""#) && text.contains(#""status":"BITSEC_E_TOO_LARGE""#))
        #expect(text.contains(#""truncated":["user_agent","details.k"]"#))
    }

    @Test func closeFlushesAndStopsTheWriter() {
        let dir = makeTempDir("audit-abi")
        defer { removeTempDir(dir) }
        let (_, rt) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/a.log"}], "durability": "none"}}"#)
        for k in 0..<1000 { _ = emit(rt, #"{"type": "session", "actor": "a\#(k)"}"#) }
        bitsec_runtime_close(rt)
        let (_, report) = verifyJSON(#"["\#(dir)/a.log"]"#)
        #expect(report.hasPrefix(#"{"intact":true,"records":1002,"#))
    }

    @Test func submitHandsOverABatchInOrderAndRecordsRefusalsInPlace() {
        let dir = makeTempDir("audit-abi")
        defer { removeTempDir(dir) }
        let (rc, rt) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/a.log"}], "durability": "batched"}}"#)
        #expect(rc == OK)
        let events: [String] = [
            #"{"type": "session", "actor": "a1"}"#,
            #"{"type": "nonsense", "details": {"request_id": "req-7"}}"#,  // refused by the writer
            #"{"type": "data_access", "action": "read", "resource": "r", "actor": "a2"}"#,
            #"{"type": "session", "#,  // not JSON
        ]
        let (src, accepted) = submit(rt, events.map { Array($0.utf8) })
        #expect(src == OK && accepted == 4)
        #expect(emit(rt, #"{"type": "session", "actor": "after"}"#) == (OK, 6))  // after the batch's 2...5
        #expect(bitsec_audit_flush(rt) == OK)
        let (_, stats) = text { bitsec_audit_stats(rt, $0, $1, $2) }
        #expect(stats.contains(#""rejected":2"#) && stats.contains(#""dropped":0"#))
        bitsec_runtime_close(rt)
        let recs = lines("\(dir)/a.log")
        #expect(recs.count == 7)  // started, the four, the emit, stopped
        guard recs.count == 7 else { return }
        #expect(recs[1].hasPrefix(#"{"seq":2,"#) && recs[1].contains(#""actor":"a1""#))
        #expect(recs[2].hasPrefix(#"{"seq":3,"#) && recs[2].contains(#""subtype":"event_rejected""#)
                && recs[2].contains(#""status":"BITSEC_E_INVALID_ARGUMENT""#)
                && recs[2].contains(#""source":"bitsec_audit_submit""#) && recs[2].contains(#""request_id":"req-7""#)
                && recs[2].contains("not a known type"))  // the reason, as an emit's refusal gives it
        #expect(recs[3].hasPrefix(#"{"seq":4,"#) && recs[3].contains(#""actor":"a2""#))
        #expect(recs[4].hasPrefix(#"{"seq":5,"#) && recs[4].contains(#""status":"BITSEC_E_MALFORMED""#))
        #expect(recs[5].hasPrefix(#"{"seq":6,"#) && recs[5].contains(#""actor":"after""#))
        let (vrc, report) = verifyJSON(#"["\#(dir)/a.log"]"#)
        #expect(vrc == OK && report.hasPrefix(#"{"intact":true,"records":7,"#) && report.contains(#""events_rejected":2"#))
    }

    @Test func submitArgumentsAndModes() {
        let dir = makeTempDir("audit-abi")
        defer { removeTempDir(dir) }
        let (_, rt) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/a.log"}], "durability": "none"}}"#)
        let ev = Array(#"{"type": "session"}"#.utf8)
        var accepted: UInt = 9
        // lengths that do not add up to events_len, either way: nothing queued
        let two = ev + ev
        for lens in [[UInt(ev.count)], [UInt(ev.count), UInt(ev.count) + 1], [UInt.max, 2]] {
            let rc = two.withUnsafeBufferPointer { d in
                d.withMemoryRebound(to: CChar.self) { c in
                    lens.withUnsafeBufferPointer { bitsec_audit_submit(rt, c.baseAddress, UInt(c.count), $0.baseAddress, UInt(lens.count), &accepted) }
                }
            }
            #expect(rc == E_INVALID && accepted == 0)
        }
        #expect(bitsec_audit_submit(rt, "{}", 2, nil, 1, &accepted) == E_INVALID)  // lengths NULL
        var many = [UInt](repeating: 0, count: Int(BitsecABI.BITSEC_AUDIT_SUBMIT_MAX_EVENTS) + 1)
        #expect(bitsec_audit_submit(rt, "", 0, &many, UInt(many.count), &accepted) == E_INVALID)
        #expect(lastError().contains("exceeds the limit of 4096"))
        #expect(bitsec_audit_submit(rt, "x", UInt.max, &many, 1, &accepted) == E_TOO_LARGE)
        #expect(bitsec_audit_submit(nil, "", 0, nil, 0, &accepted) == E_INVALID)
        #expect(bitsec_audit_submit(rt, nil, 0, nil, 0, &accepted) == OK && accepted == 0)  // nothing to hand over
        // An event over BITSEC_AUDIT_MAX_EVENT_BYTES is queued and refused by the writer, not silenced.
        let huge = [UInt8](repeating: 0x20, count: (1 << 20) + 1)
        #expect(submit(rt, [ev, huge]) == (OK, 2))
        #expect(bitsec_audit_flush(rt) == OK)
        bitsec_runtime_close(rt)
        #expect(submit(rt, [ev]).0 == E_CLOSED)
        let recs = lines("\(dir)/a.log")
        #expect(recs.contains { $0.contains(#""subtype":"event_rejected""#) && $0.contains(#""status":"BITSEC_E_TOO_LARGE""#) })
        #expect(recs.filter { $0.contains(#""type":"session""#) }.count == 1)
        // The modes where an emit may wait: submit never does, so it is refused there.
        for extra in [#""durability": "every_event""#, #""full_policy": "block""#] {
            let (_, w) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/b.log"}], \#(extra)}}"#)
            #expect(submit(w, [ev]) == (E_UNSUPPORTED, 0))
            #expect(lastError().contains("bitsec_audit_emit"))
            bitsec_runtime_close(w)
        }
        let (_, none) = open("{}")
        #expect(submit(none, [ev]).0 == E_NOT_CONFIGURED)
        bitsec_runtime_close(none)
    }

    @Test func submittedEventsLongerThanARecordArePreparedInTheCall() {
        // An event longer than max_event_bytes is validated and cut down in the call (so what
        // waits for the writer stays as small as an emit's record), in its place in the order.
        let dir = makeTempDir("audit-abi")
        defer { removeTempDir(dir) }
        let (_, rt) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/a.log"}], "max_event_bytes": 256}}"#)
        let long = #"{"type": "session", "actor": "long", "details": {"k": "\#(String(repeating: "z", count: 2000))"}}"#
        let bad = #"{"type": "lunch", "details": {"request_id": "r-long", "k": "\#(String(repeating: "z", count: 2000))"}}"#
        let events = [#"{"type": "session", "actor": "a"}"#, long, bad, #"{"type": "session", "actor": "b"}"#]
        #expect(submit(rt, events.map { Array($0.utf8) }) == (OK, 4))
        #expect(bitsec_audit_flush(rt) == OK)
        let (_, stats) = text { bitsec_audit_stats(rt, $0, $1, $2) }
        #expect(stats.contains(#""rejected":1"#))
        bitsec_runtime_close(rt)
        let recs = lines("\(dir)/a.log")
        #expect(recs.count == 6)
        guard recs.count == 6 else { return }
        #expect(recs[1].contains(#""actor":"a""#) && recs[4].contains(#""actor":"b""#))
        #expect(recs[2].hasPrefix(#"{"seq":3,"#) && recs[2].contains(#""actor":"long""#) && recs[2].contains(#""truncated":["#))
        #expect(recs[3].hasPrefix(#"{"seq":4,"#) && recs[3].contains(#""subtype":"event_rejected""#)
                && recs[3].contains(#""request_id":"r-long""#))
        let (_, report) = verifyJSON(#"["\#(dir)/a.log"]"#)
        #expect(report.contains(#""intact":true"#) && report.contains(#""events_rejected":1"#))
    }

    @Test func submitFloodOfTheBoundedQueueDropsCountsAndReports() {
        // One call with more events than the queue holds: what fits is queued, the rest is
        // dropped as the drop policy drops an emit, counted, and reported in the chain.
        let dir = makeTempDir("audit-abi")
        defer { removeTempDir(dir) }
        let (_, rt) = open(#"{"audit": {"sinks": [{"type": "file", "path": "\#(dir)/a.log"}], "queue_capacity": 100}}"#)
        // the last ones longer than a record and refused (prepared in the call): dropped for
        // room as the others, so neither recorded nor counted as refused
        let long = Array(#"{"type": "lunch", "details": {"k": "\#(String(repeating: "z", count: 20_000))"}}"#.utf8)
        let events = (0..<4000).map { Array(#"{"type": "session", "actor": "f\#($0)"}"#.utf8) } + Array(repeating: long, count: 96)
        let (rc, accepted) = submit(rt, events)
        #expect(rc == OK && accepted == 99)  // the queue of 100 holds the writer's "started" record too
        #expect(bitsec_audit_flush(rt) == OK)
        let (_, stats) = text { bitsec_audit_stats(rt, $0, $1, $2) }
        #expect(stats.contains(#""dropped":\#(4096 - Int(accepted))"#) && stats.contains(#""rejected":0"#))
        bitsec_runtime_close(rt)
        let recs = lines("\(dir)/a.log")
        #expect(recs.filter { $0.contains(#""actor":"f"#) }.count == Int(accepted))
        #expect(recs.contains { $0.contains(#""subtype":"events_dropped""#) && $0.contains(#""count":\#(4096 - Int(accepted))"#) })
        let (_, report) = verifyJSON(#"["\#(dir)/a.log"]"#)
        #expect(report.contains(#""intact":true"#) && report.contains(#""events_dropped":\#(4096 - Int(accepted))"#))
    }
}
