// The audit capability through the exported C functions only.
import Testing
import Glibc
import Bitsec

private let E_MALFORMED = BitsecABI.BITSEC_E_MALFORMED, E_TIMEOUT = BitsecABI.BITSEC_E_TIMEOUT

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
}
