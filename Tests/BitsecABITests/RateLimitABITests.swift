// bitsec_rate_limit_* and bitsec_bruteforce_* through the exported C functions only.
import Testing
import Glibc
import Dispatch
import Bitsec

private let E_NOT_FOUND = BitsecABI.BITSEC_E_NOT_FOUND

private func take(_ rt: OpaquePointer?, _ category: String?, _ key: String, cost: Int64 = 1, at: Int64 = 0) -> (Int32, [Int64]) {
    var d = [Int64](repeating: -1, count: Int(BitsecABI.BITSEC_RATE_LIMIT_DECISION_LEN))
    let rc = d.withUnsafeMutableBufferPointer { out in
        key.withCString { k in
            if let category {
                return category.withCString { c in bitsec_rate_limit_take(rt, c, UInt(strlen(c)), k, UInt(strlen(k)), cost, at, out.baseAddress) }
            }
            return bitsec_rate_limit_take(rt, nil, 0, k, UInt(strlen(k)), cost, at, out.baseAddress)
        }
    }
    return (rc, d)
}

private func bf(_ fn: (OpaquePointer?, UnsafePointer<CChar>?, UInt, Int64, UnsafeMutablePointer<Int64>?) -> Int32,
                _ rt: OpaquePointer?, _ key: String, at: Int64) -> (Int32, [Int64]) {
    var s = [Int64](repeating: -1, count: Int(BitsecABI.BITSEC_BRUTEFORCE_STATUS_LEN))
    let rc = s.withUnsafeMutableBufferPointer { out in key.withCString { k in fn(rt, k, UInt(strlen(k)), at, out.baseAddress) } }
    return (rc, s)
}

private let section = #""rate_limits": {"categories": {"default": {"capacity": 2, "period_seconds": 10}, "auth": {"capacity": 1, "period_seconds": 60}}, "brute_force": {"max_failures": 2, "window_seconds": 60, "block_seconds": 30}}"#
private let t0: Int64 = 1_800_000_000

@Suite struct RateLimitABITests {
    @Test func decisionsAreWrittenAsDocumented() {
        let (rc, rt) = open("{\(section)}")
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        // NULL category = "default". [allowed, limit, remaining, reset_after, retry_after, flags, reason]
        #expect(take(rt, nil, "k", at: t0) == (OK, [1, 2, 1, 5, 0, 0, 0]))
        #expect(take(rt, "default", "k", at: t0) == (OK, [1, 2, 0, 10, 0, 0, 0]))
        #expect(take(rt, "default", "k", at: t0) == (OK, [0, 2, 0, 10, 5, 0, 1]))
        #expect(take(rt, "default", "k", at: t0 + 5) == (OK, [1, 2, 0, 10, 0, 0, 0]))
        #expect(take(rt, "auth", "k", at: t0) == (OK, [1, 1, 0, 60, 0, 0, 0]))
        var rc2 = "k".withCString { k in "default".withCString { c in bitsec_rate_limit_reset(rt, c, 7, k, 1) } }
        #expect(rc2 == OK)
        #expect(take(rt, nil, "k", at: t0 + 5).1[2] == 1)
        rc2 = bitsec_rate_limit_take(rt, nil, 0, "k", 1, 1, 0, nil)
        #expect(rc2 == E_INVALID)
        #expect(lastError().contains("out_decision is NULL"))
    }

    @Test func badArgumentsGetStatusCodes() {
        let (_, rt) = open("{\(section)}")
        defer { bitsec_runtime_close(rt) }
        #expect(take(rt, "nope", "k").0 == E_NOT_FOUND)
        #expect(take(rt, String(repeating: "c", count: 65), "k").0 == E_NOT_FOUND)
        #expect(take(rt, nil, "").0 == E_INVALID)
        #expect(take(rt, nil, String(repeating: "x", count: 513)).0 == E_TOO_LARGE)
        #expect(take(rt, nil, "k", cost: 0).0 == E_INVALID)
        #expect(take(rt, nil, "k", cost: 3).0 == E_INVALID)
        #expect(take(rt, nil, "k", cost: Int64.min).0 == E_INVALID)
        #expect(take(rt, nil, "k", at: -5).0 == E_INVALID)
        #expect(take(rt, nil, "k", at: Int64.max).0 == E_INVALID)
        var d = [Int64](repeating: 0, count: Int(BitsecABI.BITSEC_RATE_LIMIT_DECISION_LEN))
        #expect(bitsec_rate_limit_take(rt, nil, 0, nil, 5, 1, 0, &d) == E_INVALID)
        #expect(bitsec_rate_limit_take(rt, nil, 0, "k", UInt.max, 1, 0, &d) == E_TOO_LARGE)
        let bad: [CChar] = [0x61, -1]
        #expect(bitsec_rate_limit_take(rt, nil, 0, bad, 2, 1, 0, &d) == E_INVALID)
        #expect(bitsec_rate_limit_take(nil, nil, 0, "k", 1, 1, 0, &d) == E_INVALID)
        let (_, bare) = open("{}")
        #expect(bitsec_rate_limit_take(bare, nil, 0, "k", 1, 1, 0, &d) == E_NOT_CONFIGURED)
        #expect(bitsec_bruteforce_check(bare, "k", 1, 0, &d) == E_NOT_CONFIGURED)
        bitsec_runtime_close(bare)
        #expect(bitsec_rate_limit_take(bare, nil, 0, "k", 1, 1, 0, &d) == E_CLOSED)
    }

    @Test func bruteForceThroughTheABI() {
        let (_, rt) = open("{\(section)}")
        defer { bitsec_runtime_close(rt) }
        #expect(bf(bitsec_bruteforce_record_failure, rt, "1.2.3.4", at: t0) == (OK, [0, 1, 1, 0, 0, 0]))
        #expect(bf(bitsec_bruteforce_record_failure, rt, "1.2.3.4", at: t0 + 1) == (OK, [1, 2, 0, t0 + 31, 30, 2]))
        #expect(bf(bitsec_bruteforce_check, rt, "1.2.3.4", at: t0 + 2) == (OK, [1, 0, 0, t0 + 31, 29, 0]))
        #expect(bf(bitsec_bruteforce_record_success, rt, "1.2.3.4", at: t0 + 2).1[0] == 1)
        #expect(bf(bitsec_bruteforce_check, rt, "1.2.3.4", at: t0 + 31) == (OK, [0, 0, 2, 0, 0, 0]))
        #expect(bitsec_bruteforce_reset(rt, "1.2.3.4", 7) == OK)
        #expect(bitsec_bruteforce_record_failure(rt, "x", 1, 0, nil) == OK)  // out_status optional
        #expect(bitsec_bruteforce_check(rt, "x", 1, 0, nil) == E_INVALID)
        #expect(bitsec_bruteforce_reset(rt, nil, 0) == E_INVALID)
    }

    @Test func redisTakesAndConcurrentCallers() {
        guard let redis = redisConfig() else { return }
        let cfg = String(redis.dropLast()) + #", "rate_limits": {"categories": {"c": {"capacity": 1000, "period_seconds": 3600}}}}"#
        nonisolated(unsafe) let (rc, rt) = open(cfg)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        let key = "abi-\(getpid())-\(time(nil))-\(Int.random(in: 0..<1_000_000))"
        nonisolated(unsafe) let allowed = UnsafeMutablePointer<Int>.allocate(capacity: 8)
        allowed.initialize(repeating: 0, count: 8)
        defer { allowed.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            for _ in 0..<150 {
                let (rc, d) = take(rt, "c", key, at: t0)
                if rc == OK && d[0] == 1 && d[5] == 0 { allowed[i] += 1 }
            }
        }
        #expect((0..<8).reduce(0) { $0 + allowed[$1] } == 1000)
    }
}
