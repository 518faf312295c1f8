// The stress test, through the exported C functions only: 8 worker threads call every
// operation on one runtime for a bounded time (BITSEC_STRESS_SECONDS, default 2) while a
// ninth thread reloads the token keys, the permission policy and the field keyring in a
// loop. Every result is checked against the answer that is correct at that moment:
//
// - the reloads alternate between two versions that agree on everything the workers check,
//   except one case per capability whose answer may be either version's (and nothing else);
//   the reloader, the only thread that changes them, checks after each reload that exactly
//   its version answers that case;
// - field ciphertexts always decrypt to their plaintext (both keyrings hold both keys);
// - rate-limit takes run at a fixed instant, so no token is ever refilled: a thread's own
//   key allows exactly its first `capacity` takes, and the key all threads share allows
//   exactly `capacity` takes in total;
// - a TOTP code all threads race for is accepted once at most;
// - every audit event acknowledged with a sequence number is in the file after close, with
//   its actor, and the chain verifies;
// - no call returns an error status.
//
// The embedded variant needs nothing else; the Redis variant also runs rate limits,
// revocation, the TOTP replay guard and an audit redis sink through the fixture's server
// (BITSEC_TEST_REDIS_PORT). `make sanitize-thread` runs both under ThreadSanitizer.
import Testing
import Glibc
import Synchronization
import Bitsec

private let AT: Int64 = 1_900_000_000
private let TOKEN_VALID = BitsecABI.BITSEC_TOKEN_VALID, TOKEN_UNKNOWN_KID = BitsecABI.BITSEC_TOKEN_UNKNOWN_KID, TOKEN_EXPIRED = BitsecABI.BITSEC_TOKEN_EXPIRED, TOKEN_REVOKED = BitsecABI.BITSEC_TOKEN_REVOKED
private let PERM_GRANTED = BitsecABI.BITSEC_PERM_GRANTED, PERM_NO_GRANT = BitsecABI.BITSEC_PERM_NO_GRANT, PERM_DENIED_BY_RULE = BitsecABI.BITSEC_PERM_DENIED_BY_RULE
private let TOTP_OK = BitsecABI.BITSEC_TOTP_OK, TOTP_WRONG = BitsecABI.BITSEC_TOTP_WRONG_CODE, TOTP_REPLAYED = BitsecABI.BITSEC_TOTP_REPLAYED
private let FIELD_OK = BitsecABI.BITSEC_FIELD_REASON_OK, FIELD_WRONG_CONTEXT = BitsecABI.BITSEC_FIELD_REASON_WRONG_CONTEXT, FIELD_BINARY = BitsecABI.BITSEC_FIELD_BINARY
private let RL_CAPACITY: Int64 = 100
private let WORKERS = 8

// Token keys: "hs" in tokens.keys (never reloaded); the JWK Set alternates between A = {j1}
// and B = {j1, j2}. A j2 token is VALID under B and UNKNOWN_KID under A, nothing else.
private let jwk1 = #"{"kty": "oct", "kid": "j1", "alg": "HS256", "k": "c3RyZXNzLWp3ay1vbmUtMDEyMzQ1Njc4OWFiY2RlZmc"}"#
private let jwk2 = #"{"kty": "oct", "kid": "j2", "alg": "HS256", "k": "c3RyZXNzLWp3ay10d28tMDEyMzQ1Njc4OWFiY2RlZmc"}"#
private let jwksA = #"{"keys": [\#(jwk1)]}"#
private let jwksB = #"{"keys": [\#(jwk1), \#(jwk2)]}"#

// Policies: P2 is P1 plus the role "auditor"; they differ only on auditor's system:read.
private let policyBase = #""resources": ["docs", "system"], "actions": ["read", "write"], "roles": {"reader": {"allow": ["*:read"]}, "writer": {"inherits": ["reader"], "allow": ["docs:write"], "deny": ["system:*"]}"#
private let policy1 = "{\(policyBase)}}"
private let policy2 = "{\(policyBase), \"auditor\": {\"allow\": [\"system:read\"]}}}"

// Field keyrings: both hold k1 and k2; only the primary alternates.
private let fk1 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
private let fk2 = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
private func fieldsSection(primary: String) -> String {
    #"{"keys": [{"id": "k1", "secret": {"value": "\#(fk1)", "encoding": "hex"}}, {"id": "k2", "secret": {"value": "\#(fk2)", "encoding": "hex"}}], "primary": "\#(primary)"}"#
}

private func stressSeconds() -> Double {
    guard let v = getenv("BITSEC_STRESS_SECONDS"), let s = Double(String(cString: v)), s > 0 else { return 2 }
    return s
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

private func bytes(_ s: String) -> [CChar] { Array(s.utf8).map { CChar(bitPattern: $0) } }

/// A pthread mutex (ThreadSanitizer sees it) around a list of failures and per-step counts.
private final class Shared: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var failureList: [String] = []
    private var failureCount = 0
    private var totpAccepted: Set<Int64> = []
    let stop = Atomic<Bool>(false)
    let sharedStep = Atomic<Int64>(0)
    let sharedAllowed = Atomic<Int64>(0)
    let sharedTakes = Atomic<Int64>(0)
    let reloads = Atomic<Int>(0)

    init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
    func fail(_ message: String) {
        locked {
            failureCount += 1
            if failureList.count < 40 { failureList.append(message) }
        }
    }
    /// Records that a thread saw step `s` accepted; false if it had been accepted before.
    func accept(step s: Int64) -> Bool { locked { totpAccepted.insert(s).inserted } }
    var failures: (Int, [String]) { locked { (failureCount, failureList) } }
}

/// What one worker did; written by that thread only, read after pthread_join.
private final class WorkerLog: @unchecked Sendable {
    var iterations = 0
    var audit: [(seq: UInt64, actor: String)] = []
    var ownAllowed: Int64 = 0
}

/// Runs bodies on pthreads (8 real threads even on a 2-core machine, unlike Dispatch).
private final class Threads: @unchecked Sendable {
    private var threads: [pthread_t] = []

    final class Job {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    func spawn(_ body: @escaping () -> Void) {
        var t = pthread_t()
        let ctx = Unmanaged.passRetained(Job(body)).toOpaque()
        let rc = pthread_create(&t, nil, { arg in
            guard let arg else { return nil }
            Unmanaged<Job>.fromOpaque(arg).takeRetainedValue().body()
            return nil
        }, ctx)
        if rc == 0 { threads.append(t) } else { Unmanaged<Job>.fromOpaque(ctx).release() }
    }

    var count: Int { threads.count }
    func join() { for t in threads { pthread_join(t, nil) } }
}

// ---- thin ABI wrappers (status, decision) ----

private func sign(_ rt: OpaquePointer, _ claims: String, kid: String) -> (Int32, String) {
    var buf = [CChar](repeating: 0, count: 2048)
    var n: UInt = 0
    let rc = bitsec_token_sign(rt, claims, UInt(claims.utf8.count), kid, UInt(kid.utf8.count), &buf, UInt(buf.count), &n)
    return (rc, String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

private func verify(_ rt: OpaquePointer, _ token: String) -> (Int32, Int32) {
    var reason: Int32 = -1
    var n: UInt = 0
    let rc = bitsec_verify_token(rt, token, UInt(token.utf8.count), AT, &reason, nil, 0, &n)
    return (rc, reason)
}

private func permission(_ rt: OpaquePointer, _ principal: [CChar], _ perm: String) -> (Int32, Bool, Int32) {
    var d: UInt64 = 0
    let rc = bitsec_check_permission(rt, principal, UInt(principal.count), perm, UInt(perm.utf8.count), nil, 0, &d)
    return (rc, d & 1 == 1, Int32((d >> 8) & 0xFF))
}

private func take(_ rt: OpaquePointer, _ key: String) -> (Int32, [Int64]) {
    var d = [Int64](repeating: -1, count: Int(BitsecABI.BITSEC_RATE_LIMIT_DECISION_LEN))
    let rc = bitsec_rate_limit_take(rt, "stress", 6, key, UInt(key.utf8.count), 1, AT, &d)
    return (rc, d)
}

private func totpCode(_ secret: String, at: Int64) -> String {
    var buf = [CChar](repeating: 0, count: 16)
    var n: UInt = 0
    guard bitsec_totp_code(secret, UInt(secret.utf8.count), 0, 6, 30, 0, at, &buf, 16, &n) == OK else { return "" }
    return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A well-formed code that no step of the window around `at` accepts.
private func wrongCode(_ secret: String, at: Int64) -> String {
    let window = Set([at - 30, at, at + 30].map { totpCode(secret, at: $0) })
    var v = Int(totpCode(secret, at: at)) ?? 0
    while true {
        v = (v + 1) % 1_000_000
        let c = String(v)
        let code = String(repeating: "0", count: 6 - c.count) + c
        if !window.contains(code) { return code }
    }
}

private func totpVerify(_ rt: OpaquePointer, _ secret: String, _ code: String, _ user: String, at: Int64) -> (Int32, Int32) {
    var reason: Int32 = -1, step: Int64 = 0, retry: Int64 = 0
    let rc = bitsec_totp_verify(rt, secret, UInt(secret.utf8.count), code, UInt(code.utf8.count), user, UInt(user.utf8.count), at, &reason, &step, &retry)
    return (rc, reason)
}

private func encrypt(_ rt: OpaquePointer, _ pt: [UInt8], _ ctx: String, flags: UInt32 = 0) -> (Int32, [UInt8]) {
    var out = [CChar](repeating: 0, count: Int(bitsec_field_bound(UInt(pt.count), flags)) + 1)
    var n: UInt = 0
    let rc = bitsec_encrypt_field(rt, pt, UInt(pt.count), ctx, UInt(ctx.utf8.count), flags, &out, UInt(out.count), &n)
    return (rc, out.prefix(Int(n)).map { UInt8(bitPattern: $0) })
}

private func decrypt(_ rt: OpaquePointer, _ tok: [UInt8], _ ctx: String) -> (Int32, Int32, [UInt8]) {
    var out = [UInt8](repeating: 0, count: tok.count + 1)
    var n: UInt = 0
    var reason: Int32 = -1
    let rc = bitsec_decrypt_field(rt, tok, UInt(tok.count), ctx, UInt(ctx.utf8.count), &out, UInt(out.count), &n, &reason)
    return (rc, reason, Array(out.prefix(Int(n))))
}

private func emit(_ rt: OpaquePointer, _ event: String) -> (Int32, UInt64) {
    var seq: UInt64 = 0
    let rc = bitsec_audit_emit(rt, event, UInt(event.utf8.count), &seq)
    return (rc, seq)
}

private func readFile(_ path: String) -> [UInt8] {
    guard let f = fopen(path, "rb") else { return [] }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        out += chunk.prefix(n)
    }
    return out
}

/// seq -> actor of every record in an audit file (records without an actor map to "").
private func auditActors(_ path: String) -> [UInt64: String] {
    var map: [UInt64: String] = [:]
    for line in readFile(path).split(separator: UInt8(ascii: "\n")) {
        let text = String(decoding: line, as: UTF8.self)
        guard text.hasPrefix(#"{"seq":"#) else { continue }
        let seqText = text.dropFirst(7).prefix { $0.isNumber }
        guard let seq = UInt64(seqText) else { continue }
        var actor = ""
        if let r = text.firstRange(of: #""actor":""#) {
            actor = String(text[r.upperBound...].prefix { $0 != "\"" })
        }
        map[seq] = actor
    }
    return map
}

// ---- the test ----

private func runStress(redis: String?) throws {
    let dir = makeTempDir("stress")
    defer { removeTempDir(dir) }
    let auditPath = "\(dir)/audit.log"
    let unique = "\(getpid())-\(Int.random(in: 0..<1_000_000_000))"
    var sinks = #"{"type": "file", "path": "\#(auditPath)"}"#
    var redisPart = ""
    var totpState = ""
    if let redis {
        // {"redis": {...}} -> its members plus a key prefix of this run only.
        redisPart = String(redis.dropFirst().dropLast().dropLast()) + #", "key_prefix": "bitsec:stress-\#(unique):"},"#
        sinks += #", {"type": "redis", "stream": "audit"}"#
        totpState = #""state": "redis", "#
    }
    let config = """
    {"allow_inline_secrets": true, \(redisPart)
     "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}],
                "jwks": \(jwksB), "issuer": "iss", "audience": "aud", "revocation": {"max_entries": 16777216}},
     "permissions": {"policy": \(policy1)},
     "rate_limits": {"categories": {"stress": {"capacity": \(RL_CAPACITY), "period_seconds": 86400}}},
     "totp": {\(totpState)"throttle": {"max_failures": 1000, "window_s": 60}},
     "fields": \(fieldsSection(primary: "k1")),
     "audit": {"sinks": [\(sinks)], "durability": "batched", "queue_capacity": 8192,
               "full_policy": "block", "block_timeout_ms": 60000, "durable_timeout_ms": 600000}}
    """
    let (orc, opened) = open(config)
    #expect(orc == OK, "\(lastError())")
    let rt = try #require(opened)
    var closed = false
    defer { if !closed { bitsec_runtime_close(rt) } }

    // Fixed inputs, made before the threads start (the JWK Set is B, the keyring's primary k1).
    let claims = { (jti: String, exp: Int64) in #"{"sub":"u","iss":"iss","aud":"aud","exp":\#(exp),"jti":"\#(jti)"}"# }
    let validHS = sign(rt, claims("hs-\(unique)", 2_000_000_000), kid: "hs")
    let validJ1 = sign(rt, claims("j1-\(unique)", 2_000_000_000), kid: "j1")
    let tokenJ2 = sign(rt, claims("j2-\(unique)", 2_000_000_000), kid: "j2")
    let expired = sign(rt, claims("old-\(unique)", AT - 3600), kid: "hs")
    let revoked = sign(rt, claims("rev-\(unique)", 2_000_000_000), kid: "hs")
    for t in [validHS, validJ1, tokenJ2, expired, revoked] { #expect(t.0 == OK, "\(lastError())") }
    var newly: Int32 = -1
    // By its text: the token has a sub, and in Redis its revocation lives in the sub's slot.
    var revReason: Int32 = -1
    #expect(bitsec_token_revoke_token(rt, revoked.1, UInt(revoked.1.utf8.count), AT, &revReason, &newly) == OK && newly == 1 && revReason == 0)
    let fixedPlain: [UInt8] = Array("fixed plaintext".utf8)
    let byK1 = encrypt(rt, fixedPlain, "stress.fixed")
    #expect(bitsec_field_keys_reload(rt, bytes(fieldsSection(primary: "k2")), UInt(fieldsSection(primary: "k2").utf8.count)) == OK)
    let byK2 = encrypt(rt, fixedPlain, "stress.fixed")
    #expect(byK1.0 == OK && byK2.0 == OK)
    var secretBuf = [CChar](repeating: 0, count: 64)
    var secretLen: UInt = 0
    #expect(bitsec_totp_secret_generate(160, &secretBuf, 64, &secretLen) == OK)
    let secret = String(decoding: secretBuf.prefix(Int(secretLen)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let sharedUser = "shared-\(unique)"

    let shared = Shared()
    let logs = (0..<WORKERS).map { _ in WorkerLog() }
    let threads = Threads()

    for w in 0..<WORKERS {
        let log = logs[w]
        threads.spawn {
            let fail = { (what: String, rc: Int32, detail: String) in
                shared.fail("worker \(w) iteration \(log.iterations): \(what): status \(rc) \(detail) (\(lastError()))")
            }
            let reader = bytes("u\(w)\0reader\0\0"), writer = bytes("u\(w)\0writer\0\0"), auditor = bytes("u\(w)\0auditor\0\0")
            let ownKey = "own-\(unique)-\(w)", sharedKey = "shared-\(unique)"
            let user = "user-\(unique)-\(w)"
            var i = 0
            while !shared.stop.load(ordering: .relaxed) {
                // Tokens: fixed tokens, then a fresh one issued, verified, revoked.
                for (tok, want) in [(validHS.1, TOKEN_VALID), (validJ1.1, TOKEN_VALID), (expired.1, TOKEN_EXPIRED), (revoked.1, TOKEN_REVOKED)] {
                    let (rc, reason) = verify(rt, tok)
                    if rc != OK || reason != want { fail("verify_token", rc, "reason \(reason), want \(want)") }
                }
                let (j2rc, j2) = verify(rt, tokenJ2.1)
                if j2rc != OK || (j2 != TOKEN_VALID && j2 != TOKEN_UNKNOWN_KID) { fail("verify_token j2", j2rc, "reason \(j2)") }
                let jti = "w\(w)-\(i)-\(unique)"
                let issued = sign(rt, claims(jti, 2_000_000_000), kid: "hs")
                if issued.0 != OK { fail("token_sign", issued.0, "") }
                let (v1rc, v1) = verify(rt, issued.1)
                if v1rc != OK || v1 != TOKEN_VALID { fail("verify issued", v1rc, "reason \(v1)") }
                var fresh: Int32 = -1
                var rreason: Int32 = -1
                let rrc = bitsec_token_revoke_token(rt, issued.1, UInt(issued.1.utf8.count), AT, &rreason, &fresh)
                if rrc != OK || fresh != 1 || rreason != 0 { fail("token_revoke_token", rrc, "newly \(fresh) reason \(rreason)") }
                let (v2rc, v2) = verify(rt, issued.1)
                if v2rc != OK || v2 != TOKEN_REVOKED { fail("verify revoked", v2rc, "reason \(v2)") }

                // Permissions: the same answers under both policies, except auditor's.
                for (p, perm, allowed, reason) in [(reader, "docs:read", true, PERM_GRANTED), (reader, "docs:write", false, PERM_NO_GRANT),
                                                   (writer, "docs:write", true, PERM_GRANTED), (writer, "system:read", false, PERM_DENIED_BY_RULE)] {
                    let (rc, a, r) = permission(rt, p, perm)
                    if rc != OK || a != allowed || r != reason { fail("check_permission \(perm)", rc, "allowed \(a) reason \(r)") }
                }
                let (arc, aa, ar) = permission(rt, auditor, "system:read")
                if arc != OK || !((aa && ar == PERM_GRANTED) || (!aa && ar == PERM_NO_GRANT)) { fail("check_permission auditor", arc, "allowed \(aa) reason \(ar)") }

                // Rate limits at a fixed instant: nothing refills.
                let (orc, own) = take(rt, ownKey)
                let ownWant = log.ownAllowed < RL_CAPACITY
                if orc != OK || (own[0] == 1) != ownWant || own[6] != (ownWant ? 0 : 1) || own[5] != 0
                    || (ownWant && own[2] != RL_CAPACITY - 1 - log.ownAllowed) {
                    fail("rate_limit_take own", orc, "decision \(own) after \(log.ownAllowed) allowed")
                }
                if orc == OK && own[0] == 1 { log.ownAllowed += 1 }
                let (src, sh) = take(rt, sharedKey)
                if src != OK || sh[5] != 0 || !(sh[0] == 1 && sh[6] == 0 || sh[0] == 0 && sh[6] == 1) { fail("rate_limit_take shared", src, "decision \(sh)") }
                shared.sharedTakes.add(1, ordering: .relaxed)
                if src == OK && sh[0] == 1 { shared.sharedAllowed.add(1, ordering: .relaxed) }

                // TOTP: this thread's user, one step per iteration (wrong, right, replayed).
                let at = AT + Int64(i) * 30
                let right = totpCode(secret, at: at)
                for (code, want) in [(wrongCode(secret, at: at), TOTP_WRONG), (right, TOTP_OK), (right, TOTP_REPLAYED)] {
                    let (rc, reason) = totpVerify(rt, secret, code, user, at: at)
                    if rc != OK || reason != want { fail("totp_verify", rc, "reason \(reason), want \(want)") }
                }
                // ... and one user every thread races for: each step is accepted once at most.
                let s = shared.sharedStep.load(ordering: .acquiring)
                let (trc, treason) = totpVerify(rt, secret, totpCode(secret, at: AT + s * 30), sharedUser, at: AT + s * 30)
                if trc != OK || (treason != TOTP_OK && treason != TOTP_REPLAYED) { fail("totp_verify shared", trc, "reason \(treason)") }
                if trc == OK && treason == TOTP_OK {
                    if !shared.accept(step: s) { fail("totp_verify shared", trc, "step \(s) accepted twice") }
                    shared.sharedStep.store(s + 1, ordering: .releasing)
                }

                // Fields: a fresh value round trip, the wrong context, the fixed tokens of both keys.
                let pt = Array("w\(w) i\(i) \(unique)".utf8)
                let ctx = "stress.value|\(w)|\(i)"
                let (erc, tok) = encrypt(rt, pt, ctx)
                let (drc, dr, back) = decrypt(rt, tok, ctx)
                if erc != OK || drc != OK || dr != FIELD_OK || back != pt { fail("encrypt/decrypt", erc != OK ? erc : drc, "reason \(dr)") }
                let (wrc, wr, _) = decrypt(rt, tok, ctx + "x")
                if wrc != OK || wr != FIELD_WRONG_CONTEXT { fail("decrypt wrong context", wrc, "reason \(wr)") }
                for fixed in [byK1.1, byK2.1] {
                    let (frc, fr, fb) = decrypt(rt, fixed, "stress.fixed")
                    if frc != OK || fr != FIELD_OK || fb != fixedPlain { fail("decrypt fixed", frc, "reason \(fr)") }
                }

                // Audit: every acknowledged event must be in the file afterwards.
                let actor = "w\(w)-\(i)"
                let (arc2, seq) = emit(rt, #"{"type": "application", "subtype": "stress", "actor": "\#(actor)"}"#)
                if arc2 != OK || seq == 0 { fail("audit_emit", arc2, "seq \(seq)") } else { log.audit.append((seq, actor)) }
                i += 1
                log.iterations = i
            }
        }
    }

    // The reloader: each reload, then the one case whose answer it changes.
    threads.spawn {
        let auditor = bytes("r\0auditor\0\0")
        var n = 0
        while !shared.stop.load(ordering: .relaxed) {
            let setB = n % 2 == 1
            let jwks = setB ? jwksB : jwksA
            var rc = bitsec_token_keys_reload(rt, jwks, UInt(jwks.utf8.count))
            let (vrc, reason) = verify(rt, tokenJ2.1)
            if rc != OK || vrc != OK || reason != (setB ? TOKEN_VALID : TOKEN_UNKNOWN_KID) {
                shared.fail("reload \(n): token keys status \(rc), j2 token reason \(reason) (\(lastError()))")
            }
            let policy = setB ? policy2 : policy1
            rc = bitsec_permission_policy_load(rt, policy, UInt(policy.utf8.count))
            let (prc, allowed, preason) = permission(rt, auditor, "system:read")
            if rc != OK || prc != OK || allowed != setB || preason != (setB ? PERM_GRANTED : PERM_NO_GRANT) {
                shared.fail("reload \(n): policy status \(rc), auditor allowed \(allowed) reason \(preason) (\(lastError()))")
            }
            let primary = setB ? "k2" : "k1"
            let section = fieldsSection(primary: primary)
            rc = bitsec_field_keys_reload(rt, section, UInt(section.utf8.count))
            let (erc, tok) = encrypt(rt, fixedPlain, "stress.reload", flags: FIELD_BINARY)
            if rc != OK || erc != OK || tok.count < 4 || Array(tok[2..<4]) != Array(primary.utf8) {
                shared.fail("reload \(n): fields status \(rc), encrypt \(erc) under \(primary) (\(lastError()))")
            }
            n += 1
            shared.reloads.store(n, ordering: .relaxed)
        }
    }
    #expect(threads.count == WORKERS + 1)

    let seconds = stressSeconds()
    let start = monotonicSeconds()
    while monotonicSeconds() - start < seconds { usleep(20_000) }
    shared.stop.store(true, ordering: .relaxed)
    threads.join()

    let (failureCount, failureList) = shared.failures
    #expect(failureCount == 0, "\(failureCount) wrong results, first: \(failureList.joined(separator: "\n"))")
    let iterations = logs.map(\.iterations)
    #expect(iterations.allSatisfy { $0 > 0 }, "iterations per worker: \(iterations)")
    #expect(shared.reloads.load(ordering: .relaxed) >= 2, "reloads: \(shared.reloads.load(ordering: .relaxed))")

    // Rate limits: never more than the capacity; exactly it once enough takes were made.
    let takes = shared.sharedTakes.load(ordering: .relaxed), allowed = shared.sharedAllowed.load(ordering: .relaxed)
    #expect(allowed == min(takes, RL_CAPACITY), "shared key: \(allowed) allowed of \(takes) takes")
    for log in logs { #expect(log.ownAllowed == min(Int64(log.iterations), RL_CAPACITY)) }
    // TOTP: the shared user's accepted steps are exactly 0..<sharedStep.
    #expect(shared.sharedStep.load(ordering: .relaxed) > 0)

    // Audit: flush, close, then every acknowledged seq is in the file with its actor.
    #expect(bitsec_audit_flush(rt) == OK, "\(lastError())")
    var stats = [CChar](repeating: 0, count: 4096)
    var statsLen: UInt = 0
    #expect(bitsec_audit_stats(rt, &stats, UInt(stats.count), &statsLen) == OK)
    let statsText = String(decoding: stats.prefix(Int(statsLen)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let dropped = statsText.firstRange(of: #""dropped":"#).map { String(statsText[$0.upperBound...].prefix { $0.isNumber }) } ?? "?"
    bitsec_runtime_close(rt)
    closed = true
    let records = auditActors(auditPath)
    var acknowledged = 0, missing: [UInt64] = [], seqs = Set<UInt64>()
    for log in logs {
        var previous: UInt64 = 0
        for (seq, actor) in log.audit {
            acknowledged += 1
            seqs.insert(seq)
            if records[seq] != actor { missing.append(seq) }
            if seq <= previous { missing.append(seq) }  // one thread's events keep their order
            previous = seq
        }
    }
    #expect(missing.isEmpty, "\(missing.count) acknowledged events missing or out of order, e.g. \(missing.prefix(10))")
    #expect(seqs.count == acknowledged, "duplicate sequence numbers")
    let paths = #"["\#(auditPath)"]"#
    var report = [CChar](repeating: 0, count: 8192)
    var reportLen: UInt = 0
    #expect(bitsec_audit_verify(paths, UInt(paths.utf8.count), nil, 0, &report, UInt(report.count), &reportLen) == OK)
    let reportText = String(decoding: report.prefix(Int(reportLen)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    #expect(reportText.hasPrefix(#"{"intact":true,"records":\#(records.count),"#), "\(reportText)")
    #expect(!reportText.contains(#""torn_tail":{"#))
    print("stress (\(redis == nil ? "embedded" : "redis")): \(seconds) s, iterations per worker \(iterations), "
        + "\(shared.reloads.load(ordering: .relaxed)) reload rounds, \(acknowledged) audit events acknowledged, \(records.count) records "
        + "(automatic events dropped on a full queue: \(dropped)), "
        + "shared TOTP steps accepted \(shared.sharedStep.load(ordering: .relaxed)), shared key \(allowed)/\(takes)")
}

@Suite struct StressTests {
    @Test func everyOperationOnEightThreadsDuringReloads() throws {
        try runStress(redis: nil)
    }

    @Test func everyOperationOnEightThreadsDuringReloadsWithRedis() throws {
        guard let redis = redisConfig() else { return }
        try runStress(redis: redis)
    }
}
