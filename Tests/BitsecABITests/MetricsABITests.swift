// The latency histograms through the ABI: each timed export counts its calls in its
// operation's series of bitsec_metrics_text, only configured operations are listed, and the
// `metrics` section switches them.
import Testing
import Glibc
import Bitsec

private func metrics(_ rt: OpaquePointer?) -> String {
    var need: UInt = 0
    guard bitsec_metrics_text(rt, nil, 0, &need) == E_BUFFER else { return "" }
    var buf = [CChar](repeating: 0, count: Int(need) + 1)
    var len: UInt = 0
    guard bitsec_metrics_text(rt, &buf, UInt(buf.count), &len) == OK else { return "" }
    return String(decoding: buf.prefix(Int(len)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

private func count(_ text: String, _ op: String) -> Int? {
    let series = #"bitsec_operation_duration_seconds_count{operation="\#(op)",pid="\#(getpid())"} "#
    for line in text.split(separator: "\n") where line.hasPrefix(series) { return Int(line.dropFirst(series.count)) }
    return nil
}

private let config = #"""
{"allow_inline_secrets": true,
 "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}]},
 "permissions": {"policy": {"resources": ["docs"], "actions": ["read"], "roles": {"reader": {"allow": ["docs:read"]}}}},
 "rate_limits": {"categories": {"default": {"capacity": 100, "period_seconds": 1}}},
 "fields": {"keys": [{"id": "k1", "secret": {"value": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "encoding": "hex"}}]}
"""#

@Suite struct MetricsABITests {
    @Test func everyTimedCallIsCountedInItsOperation() {
        let (rc, rt) = open(config + #", "metrics": {"histograms": "on"}}"#)
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        var token = [CChar](repeating: 0, count: 512)
        var tn: UInt = 0
        let claims = #"{"sub": "u1", "roles": ["reader"], "exp": 4000000000}"#
        #expect(bitsec_token_sign(rt, claims, UInt(claims.utf8.count), nil, 0, &token, 512, &tn) == OK)
        var reason: Int32 = -1
        var vn: UInt = 0
        for _ in 0..<3 {
            #expect(bitsec_verify_token(rt, token, tn, 0, &reason, nil, 0, &vn) == OK)
            #expect(reason == BitsecABI.BITSEC_TOKEN_VALID)
        }
        // A call that fails after reaching the runtime is counted too (a NULL out_len).
        #expect(bitsec_verify_token(rt, token, tn, 0, &reason, nil, 0, nil) == E_INVALID)
        var d: UInt64 = 0
        let principal = "u1\0reader\0\0"
        for _ in 0..<5 { #expect(bitsec_check_permission(rt, principal, UInt(principal.utf8.count), "docs:read", 9, nil, 0, &d) == OK) }
        var rl = [Int64](repeating: 0, count: Int(BitsecABI.BITSEC_RATE_LIMIT_DECISION_LEN))
        for _ in 0..<2 { #expect(bitsec_rate_limit_take(rt, "default", 7, "k", 1, 1, 0, &rl) == OK) }
        var out = [CChar](repeating: 0, count: 512)
        var on: UInt = 0
        let plain: [UInt8] = [1, 2, 3]
        #expect(bitsec_encrypt_field(rt, plain, 3, "t.c:1", 5, 0, &out, 512, &on) == OK)
        let sealed = out.prefix(Int(on)).map { UInt8(bitPattern: $0) }
        var back = [UInt8](repeating: 0, count: 64)
        var bn: UInt = 0
        var fr: Int32 = -1
        #expect(bitsec_decrypt_field(rt, sealed, on, "t.c:1", 5, &back, 64, &bn, &fr) == OK)
        #expect(fr == 0 && bn == 3)
        let t = metrics(rt)
        #expect(count(t, "token_sign") == 1)
        #expect(count(t, "token_verify") == 4)
        #expect(count(t, "permission_check") == 5)
        #expect(count(t, "rate_limit_take") == 2)
        #expect(count(t, "bruteforce") == 0)
        #expect(count(t, "field_encrypt") == 1)
        #expect(count(t, "field_decrypt") == 1)
        // Sections that are not configured have no series.
        #expect(count(t, "totp_verify") == nil)
        #expect(count(t, "audit_emit") == nil)
        #expect(!t.contains("bitsec_redis_roundtrip_seconds"))
        // Calls on a NULL handle never reach a runtime and are not counted anywhere.
        #expect(bitsec_check_permission(nil, principal, UInt(principal.utf8.count), "docs:read", 9, nil, 0, &d) == E_INVALID)
        #expect(count(metrics(rt), "permission_check") == 5)
    }

    @Test func offLeavesTheFamiliesOutAndSampledWeighsCalls() {
        let (rc, rt) = open(config + #", "metrics": {"histograms": "off"}}"#)
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        var d: UInt64 = 0
        let principal = "u1\0reader\0\0"
        #expect(bitsec_check_permission(rt, principal, UInt(principal.utf8.count), "docs:read", 9, nil, 0, &d) == OK)
        let t = metrics(rt)
        #expect(t.contains("bitsec_table_entries"))  // the other metrics stay
        #expect(!t.contains("bitsec_operation_duration_seconds"))

        let (rc2, rs) = open(config + #", "metrics": {"histograms": "sampled", "sample_every": 4}}"#)
        #expect(rc2 == OK)
        defer { bitsec_runtime_close(rs) }
        for _ in 0..<40 { #expect(bitsec_check_permission(rs, principal, UInt(principal.utf8.count), "docs:read", 9, nil, 0, &d) == OK) }
        // One thread: every fourth call measured, weighed 4: the count is exact here.
        #expect(count(metrics(rs), "permission_check") == 40)
    }

    @Test func sampledIsTheDefault() {
        let (rc, rt) = open(config + "}")
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        var d: UInt64 = 0
        let principal = "u1\0reader\0\0"
        // The first call of a thread group is measured and weighs sample_every (16).
        #expect(bitsec_check_permission(rt, principal, UInt(principal.utf8.count), "docs:read", 9, nil, 0, &d) == OK)
        #expect(count(metrics(rt), "permission_check") == 16)
    }

    @Test func invalidMetricsSectionIsAConfigErrorNamingTheField() {
        let (rc, rt) = open(config + #", "metrics": {"histograms": "sometimes"}}"#)
        #expect(rc == E_CONFIG)
        #expect(rt == nil)
        #expect(lastError().contains("metrics.histograms"))
    }
}
