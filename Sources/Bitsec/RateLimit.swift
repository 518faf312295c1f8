// Rate limits and brute-force blocking (the rate_limits section).
internal import BitsecCore

/// Takes cost tokens from the bucket of key in a rate-limit category, and says whether the
/// request is allowed (token bucket, exact integer arithmetic; in process, or cluster-wide
/// through Redis with one EVALSHA round trip, by the section's "store").
///
/// rt: the runtime (its configuration must have a rate_limits section).
/// category, category_len: the category name (UTF-8, at most
/// BITSEC_RATE_LIMIT_MAX_CATEGORY_BYTES); NULL or length 0 means "default".
/// key, key_len: who is limited (user id, IP, API key): 1 to BITSEC_RATE_LIMIT_MAX_KEY_BYTES
/// bytes of UTF-8.
/// cost: tokens to take, 1 to the category's capacity.
/// at: the instant, Unix seconds; 0 means now (with Redis: the Redis server's clock).
/// out_decision: caller-owned array of BITSEC_RATE_LIMIT_DECISION_LEN int64_t, written on
/// BITSEC_OK: [BITSEC_RATE_LIMIT_D_ALLOWED] 1 or 0, [BITSEC_RATE_LIMIT_D_LIMIT] capacity,
/// [BITSEC_RATE_LIMIT_D_REMAINING] whole tokens left, [BITSEC_RATE_LIMIT_D_RESET_AFTER] seconds until full,
/// [BITSEC_RATE_LIMIT_D_RETRY_AFTER] seconds to wait (>= 1 when denied, 0 when allowed),
/// [BITSEC_RATE_LIMIT_D_FLAGS] BITSEC_RATE_LIMIT_FLAG_DEGRADED when Redis was unavailable and the failure
/// policy decided, [BITSEC_RATE_LIMIT_D_REASON] a BITSEC_RATE_LIMIT_REASON_* code.
/// Returns BITSEC_OK for every decision, allowed or denied, degraded or not (a Redis outage is
/// never an error); BITSEC_E_NOT_FOUND (unknown category); BITSEC_E_INVALID_ARGUMENT (NULL
/// pointer, empty key, invalid UTF-8, cost < 1 or > capacity, at < 0); BITSEC_E_TOO_LARGE
/// (key too long); BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; in-process buckets are sharded (no global lock).
/// Since: 0.1.0
@c(bitsec_rate_limit_take)
public func bitsec_rate_limit_take(_ rt: OpaquePointer?, _ category: UnsafePointer<CChar>?, _ category_len: UInt,
                                   _ key: UnsafePointer<CChar>?, _ key_len: UInt, _ cost: Int64, _ at: Int64,
                                   _ out_decision: UnsafeMutablePointer<Int64>?) -> Int32 {
    withRuntime(rt, timed: .rateLimitTake) { (r) throws(BitsecError) in
        let out_decision = try requiredOut(out_decision, "out_decision")
        let service = try r.require(r.rateLimits)
        let d = try service.take(in: try categoryArg(service, category, category_len), key: try keyArg(key, key_len), cost: cost, at: at)
        write(d, out_decision)
    }
}

/// Forgets the bucket of key in a category (in process and in Redis): its next take finds it
/// full. For administrators and tests.
///
/// rt, category, category_len, key, key_len: as bitsec_rate_limit_take.
/// Returns BITSEC_OK; BITSEC_E_NOT_FOUND; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE (Redis did not answer: the bucket may remain there);
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_rate_limit_reset)
public func bitsec_rate_limit_reset(_ rt: OpaquePointer?, _ category: UnsafePointer<CChar>?, _ category_len: UInt,
                                    _ key: UnsafePointer<CChar>?, _ key_len: UInt) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let service = try r.require(r.rateLimits)
        try service.reset(in: try categoryArg(service, category, category_len), key: try keyArg(key, key_len))
    }
}

/// Records a failed login (or other attempt) for key. When this completes the configured
/// number of failures within the window (default 5 in an hour), key is blocked for the block
/// duration (default one hour), cluster-wide when the store is Redis. Failures during a block
/// are not counted and do not extend it.
///
/// rt: the runtime (rate_limits section; its brute_force part, or the defaults).
/// key, key_len: the IP address, account or both: 1 to BITSEC_RATE_LIMIT_MAX_KEY_BYTES bytes
/// of UTF-8.
/// at: the instant, Unix seconds; 0 means now.
/// out_status: optional caller-owned array of BITSEC_BRUTEFORCE_STATUS_LEN int64_t:
/// [BITSEC_BRUTEFORCE_S_BLOCKED] 1 or 0, [BITSEC_BRUTEFORCE_S_FAILURES] failures in the window,
/// [BITSEC_BRUTEFORCE_S_REMAINING] failures left before a block, [BITSEC_BRUTEFORCE_S_BLOCKED_UNTIL] Unix seconds (0 when
/// not blocked), [BITSEC_BRUTEFORCE_S_RETRY_AFTER] seconds until unblocked, [BITSEC_BRUTEFORCE_S_FLAGS]
/// BITSEC_BRUTEFORCE_FLAG_* bits (DEGRADED, NEWLY_BLOCKED: this call started the block,
/// TABLE_FULL).
/// Returns BITSEC_OK (blocked or not); BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED. A Redis outage is never an error: the
/// brute_force failure_policy decides and the DEGRADED flag is set.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_bruteforce_record_failure)
public func bitsec_bruteforce_record_failure(_ rt: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ key_len: UInt, _ at: Int64,
                                             _ out_status: UnsafeMutablePointer<Int64>?) -> Int32 {
    withRuntime(rt, timed: .bruteforce) { (r) throws(BitsecError) in
        write(try r.require(r.rateLimits).bruteForce.recordFailure(key: try keyArg(key, key_len), at: at), out_status)
    }
}

/// Records a successful login for key: its failures are cleared. An active block stays until
/// it ends (use bitsec_bruteforce_reset to lift it).
///
/// rt, key, key_len, at, out_status: as bitsec_bruteforce_record_failure (out_status optional).
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_bruteforce_record_success)
public func bitsec_bruteforce_record_success(_ rt: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ key_len: UInt, _ at: Int64,
                                             _ out_status: UnsafeMutablePointer<Int64>?) -> Int32 {
    withRuntime(rt, timed: .bruteforce) { (r) throws(BitsecError) in
        write(try r.require(r.rateLimits).bruteForce.recordSuccess(key: try keyArg(key, key_len), at: at), out_status)
    }
}

/// Says whether key is blocked, until when, and how many failures it has in the window.
///
/// rt, key, key_len, at: as bitsec_bruteforce_record_failure.
/// out_status: caller-owned array of BITSEC_BRUTEFORCE_STATUS_LEN int64_t (required).
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_bruteforce_check)
public func bitsec_bruteforce_check(_ rt: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ key_len: UInt, _ at: Int64,
                                    _ out_status: UnsafeMutablePointer<Int64>?) -> Int32 {
    withRuntime(rt, timed: .bruteforce) { (r) throws(BitsecError) in
        let out_status = try requiredOut(out_status, "out_status")
        write(try r.require(r.rateLimits).bruteForce.check(key: try keyArg(key, key_len), at: at), out_status)
    }
}

/// Clears key's failures and lifts its block (administrators, tests).
///
/// rt, key, key_len: as bitsec_bruteforce_record_failure.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE (Redis did not answer: the block may remain cluster-wide);
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_bruteforce_reset)
public func bitsec_bruteforce_reset(_ rt: OpaquePointer?, _ key: UnsafePointer<CChar>?, _ key_len: UInt) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        try r.require(r.rateLimits).bruteForce.reset(key: try keyArg(key, key_len))
    }
}
