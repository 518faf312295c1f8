// Every exported function, called the way a careless or hostile C caller would: NULL
// pointers, zero and huge lengths, invalid UTF-8, edge integers, missing or tiny output
// buffers, a NULL and a closed runtime handle. Whatever arrives, the call must return a
// status code (or, for the few functions without one, a documented value) and never crash,
// trap or touch memory it was not given (run under `make sanitize`, ASan sees the latter).
//
// The table is checked against include/bitsec_api.h: a new exported function without an
// entry here fails `exportedFunctionsAreAllCovered`.
import Testing
import Glibc
import Bitsec

// MARK: - Arguments

/// Input buffers. Each is NUL-terminated inside its allocation (bitsec_runtime_open_file
/// reads a C string), and the huge lengths below are refused before a byte is read: ASan
/// would report a read past these 64 bytes.
private let inputBytes = 64
private let invalidUTF8: [UInt8] = [0xFF, 0xFE, 0xC0, 0x80, 0xED, 0xA0, 0x80, 0xF4, 0x90, 0x80, 0x80, 0x00]

/// Lengths beyond every limit of the ABI (the largest, BITSEC_MAX_ARGUMENT_BYTES, is 16 MiB).
private let hugeLengths: [UInt] = [UInt.max, UInt(Int.max) + 1, UInt(Int.max), 1 << 40, UInt(UInt32.max) + 1]

private let edgeIntegers: [Int64] = [
    0, 1, -1, 2, 30, Int64.min, Int64.max, Int64.min + 1, Int64.max - 1, Int64(Int32.min), Int64(Int32.max),
    Int64(UInt32.max), Int64(Int32.max) + 1, 253_402_300_800 /* year 10000 */, -253_402_300_800, 86_400, 86_401,
]

/// One call's arguments. `s` are the (pointer, length) inputs in the order the function
/// takes them, `n` its integer arguments in order; outputs are shared scratch buffers.
private struct Args {
    var rt: OpaquePointer?
    var s: [(UnsafePointer<CChar>?, UInt)]
    var n: [Int64]
    var out: UnsafeMutablePointer<CChar>?
    var cap: UInt
    var outLen: UnsafeMutablePointer<UInt>?
    var i32: UnsafeMutablePointer<Int32>?
    var i32b: UnsafeMutablePointer<Int32>?
    var i64: UnsafeMutablePointer<Int64>?
    var i64b: UnsafeMutablePointer<Int64>?
    var u64: UnsafeMutablePointer<UInt64>?

    func p(_ i: Int) -> UnsafePointer<CChar>? { s[i].0 }
    func l(_ i: Int) -> UInt { s[i].1 }
    func b(_ i: Int) -> UnsafePointer<UInt8>? { UnsafeRawPointer(s[i].0)?.assumingMemoryBound(to: UInt8.self) }
    var outBytes: UnsafeMutablePointer<UInt8>? { UnsafeMutableRawPointer(out)?.assumingMemoryBound(to: UInt8.self) }
    func i(_ k: Int) -> Int32 { Int32(truncatingIfNeeded: n[k]) }
    func u(_ k: Int) -> UInt64 { UInt64(bitPattern: n[k]) }
    func f(_ k: Int) -> UInt32 { UInt32(truncatingIfNeeded: n[k]) }
}

/// An exported function that returns a status code.
private struct Entry: Sendable {
    let name: String
    let takesRuntime: Bool
    /// Well-formed inputs (so that one hostile argument at a time gets past the others).
    let inputs: [String]
    /// Ordinary integer arguments, in order.
    let ints: [Int64]
    let call: @Sendable (Args) -> Int32

    init(_ name: String, rt: Bool = true, inputs: [String] = [], ints: [Int64] = [], _ call: @escaping @Sendable (Args) -> Int32) {
        self.name = name
        self.takesRuntime = rt
        self.inputs = inputs
        self.ints = ints
        self.call = call
    }
}

private let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
private let principal = "u1\0reader\0t1\0sales"

private let table: [Entry] = [
    Entry("bitsec_audit_emit", inputs: [#"{"type": "session", "actor": "u1"}"#]) { a in bitsec_audit_emit(a.rt, a.p(0), a.l(0), a.u64) },
    Entry("bitsec_audit_submit", inputs: [#"{"type": "session", "actor": "u1"}"#]) { a in
        var lengths = [a.l(0)]  // the one event's length: a hostile events_len is a hostile length too
        return bitsec_audit_submit(a.rt, a.p(0), a.l(0), &lengths, 1, a.outLen)
    },
    Entry("bitsec_audit_flush") { a in bitsec_audit_flush(a.rt) },
    Entry("bitsec_audit_stats") { a in bitsec_audit_stats(a.rt, a.out, a.cap, a.outLen) },
    Entry("bitsec_audit_verify", rt: false, inputs: ["[]", ""]) { a in
        bitsec_audit_verify(a.p(0), a.l(0), a.b(1), a.l(1), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_backup_code_verify", inputs: ["u1", "abcd-efgh-ijkl", ""], ints: [0]) { a in
        bitsec_backup_code_verify(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.n[0], a.i32, a.i32b, a.i64)
    },
    Entry("bitsec_backup_codes_generate", ints: [1]) { a in bitsec_backup_codes_generate(a.rt, a.i(0), a.out, a.cap, a.outLen) },
    Entry("bitsec_backup_code_generate", ints: [1]) { a in bitsec_backup_code_generate(a.rt, a.i(0), a.out, a.cap, a.outLen) },
    Entry("bitsec_bruteforce_check", inputs: ["10.0.0.1"], ints: [0]) { a in bitsec_bruteforce_check(a.rt, a.p(0), a.l(0), a.n[0], a.i64) },
    Entry("bitsec_bruteforce_record_failure", inputs: ["10.0.0.1"], ints: [0]) { a in
        bitsec_bruteforce_record_failure(a.rt, a.p(0), a.l(0), a.n[0], a.i64)
    },
    Entry("bitsec_bruteforce_record_success", inputs: ["10.0.0.1"], ints: [0]) { a in
        bitsec_bruteforce_record_success(a.rt, a.p(0), a.l(0), a.n[0], a.i64)
    },
    Entry("bitsec_bruteforce_reset", inputs: ["10.0.0.1"]) { a in bitsec_bruteforce_reset(a.rt, a.p(0), a.l(0)) },
    Entry("bitsec_client_key", inputs: ["2001:db8::1"]) { a in bitsec_client_key(a.rt, a.p(0), a.l(0), a.out, a.cap, a.outLen) },
    Entry("bitsec_login_guard_client_key", inputs: ["2001:db8::1"]) { a in
        bitsec_login_guard_client_key(a.rt, a.p(0), a.l(0), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_login_guard_begin", inputs: ["vera", "10.0.0.1"], ints: [0]) { a in
        bitsec_login_guard_begin(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.i64)
    },
    Entry("bitsec_login_guard_cancel", inputs: ["vera", "10.0.0.1"], ints: [1, 0]) { a in
        bitsec_login_guard_cancel(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.n[1])
    },
    Entry("bitsec_login_guard_succeeded", inputs: ["vera", "10.0.0.1"], ints: [1, 0]) { a in
        bitsec_login_guard_succeeded(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.n[1])
    },
    Entry("bitsec_check_permission", inputs: [principal, "docs:read", "u1\0t1\0sales"]) { a in
        bitsec_check_permission(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.u64)
    },
    Entry("bitsec_check_permission_claims", inputs: [#"{"sub": "u1", "roles": ["reader"]}"#, "docs:read", "u1\0t1\0sales"]) { a in
        bitsec_check_permission_claims(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.u64)
    },
    Entry("bitsec_check_permission_packed", inputs: ["docs:read\0" + principal]) { a in
        bitsec_check_permission_packed(a.rt, a.p(0), a.l(0), a.u64)
    },
    Entry("bitsec_check_permissions", inputs: [principal, "docs:read docs:write", ""]) { a in
        // out_decisions shares the output scratch (64 KiB, far more than the batch limit).
        bitsec_check_permissions(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2),
                                 UnsafeMutableRawPointer(a.out)?.assumingMemoryBound(to: UInt64.self), a.cap / 8, a.outLen)
    },
    Entry("bitsec_decrypt_field", inputs: ["AAAA", "ctx"]) { a in
        bitsec_decrypt_field(a.rt, a.b(0), a.l(0), a.p(1), a.l(1), a.outBytes, a.cap, a.outLen, a.i32)
    },
    Entry("bitsec_encrypt_field", inputs: ["plain", "ctx"], ints: [0]) { a in
        bitsec_encrypt_field(a.rt, a.b(0), a.l(0), a.p(1), a.l(1), a.f(0), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_fernet_decrypt", inputs: ["gAAAAA"], ints: [0, 0]) { a in
        bitsec_fernet_decrypt(a.rt, a.p(0), a.l(0), a.n[0], a.n[1], a.outBytes, a.cap, a.outLen, a.i32)
    },
    Entry("bitsec_fernet_decrypt_ttl", inputs: ["gAAAAA"], ints: [-1, 0]) { a in
        bitsec_fernet_decrypt_ttl(a.rt, a.p(0), a.l(0), a.n[0], a.n[1], a.outBytes, a.cap, a.outLen, a.i32)
    },
    Entry("bitsec_fernet_encrypt", inputs: ["plain"], ints: [0]) { a in
        bitsec_fernet_encrypt(a.rt, a.b(0), a.l(0), a.n[0], a.out, a.cap, a.outLen)
    },
    Entry("bitsec_fernet_migrate", inputs: ["gAAAAA", "ctx"], ints: [0, 0, 0]) { a in
        bitsec_fernet_migrate(a.rt, a.p(0), a.l(0), a.n[0], a.n[1], a.p(1), a.l(1), a.f(2), a.out, a.cap, a.outLen, a.i32)
    },
    Entry("bitsec_fernet_migrate_ttl", inputs: ["gAAAAA", "ctx"], ints: [-1, 0, 0]) { a in
        bitsec_fernet_migrate_ttl(a.rt, a.p(0), a.l(0), a.n[0], a.n[1], a.p(1), a.l(1), a.f(2), a.out, a.cap, a.outLen, a.i32)
    },
    Entry("bitsec_fernet_rotate", inputs: ["gAAAAA"]) { a in bitsec_fernet_rotate(a.rt, a.p(0), a.l(0), a.out, a.cap, a.outLen, a.i32) },
    Entry("bitsec_fields_reload", inputs: ["{}"]) { a in bitsec_fields_reload(a.rt, a.p(0), a.l(0)) },
    Entry("bitsec_field_keys_reload", inputs: ["{}"]) { a in bitsec_field_keys_reload(a.rt, a.p(0), a.l(0)) },
    Entry("bitsec_hotp_check", rt: false, inputs: [secret, "755224"], ints: [0, 6, 0, 5]) { a in
        bitsec_hotp_check(a.p(0), a.l(0), a.p(1), a.l(1), a.i(0), a.i(1), a.u(2), a.i(3), a.i32, a.u64)
    },
    Entry("bitsec_hotp_code", rt: false, inputs: [secret], ints: [0, 6, 0]) { a in
        bitsec_hotp_code(a.p(0), a.l(0), a.i(0), a.i(1), a.u(2), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_metrics_text") { a in bitsec_metrics_text(a.rt, a.out, a.cap, a.outLen) },
    Entry("bitsec_permission_policy_load", inputs: ["{}"]) { a in bitsec_permission_policy_load(a.rt, a.p(0), a.l(0)) },
    Entry("bitsec_permission_rule", ints: [0]) { a in bitsec_permission_rule(a.rt, a.u(0), a.out, a.cap, a.outLen) },
    Entry("bitsec_permission_shadow_load", inputs: ["{}"]) { a in bitsec_permission_shadow_load(a.rt, a.p(0), a.l(0)) },
    Entry("bitsec_permission_stats") { a in bitsec_permission_stats(a.rt, a.out, a.cap, a.outLen) },
    Entry("bitsec_random_bytes", rt: false, inputs: ["12345678"]) { a in
        // The length is the hostile input here: lengths that fit the 64 KiB scratch are filled;
        // larger ones come with NULL, which the library must refuse without writing.
        a.l(0) <= UInt(outBytesCount) ? bitsec_random_bytes(a.outBytes, a.l(0)) : bitsec_random_bytes(nil, a.l(0))
    },
    Entry("bitsec_rate_limit_reset", inputs: ["default", "k1"]) { a in bitsec_rate_limit_reset(a.rt, a.p(0), a.l(0), a.p(1), a.l(1)) },
    Entry("bitsec_rate_limit_take", inputs: ["default", "k1"], ints: [1, 0]) { a in
        bitsec_rate_limit_take(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.n[1], a.i64)
    },
    Entry("bitsec_redis_ping") { a in bitsec_redis_ping(a.rt, a.i64) },
    Entry("bitsec_rewrap_field", inputs: ["AAAA", "ctx"], ints: [0]) { a in
        bitsec_rewrap_field(a.rt, a.b(0), a.l(0), a.p(1), a.l(1), a.f(0), a.out, a.cap, a.outLen, a.i32, a.i32b)
    },
    Entry("bitsec_field_rewrap", inputs: ["AAAA", "ctx"], ints: [0]) { a in
        bitsec_field_rewrap(a.rt, a.b(0), a.l(0), a.p(1), a.l(1), a.f(0), a.out, a.cap, a.outLen, a.i32, a.i32b)
    },
    Entry("bitsec_runtime_describe") { a in bitsec_runtime_describe(a.rt, a.out, a.cap, a.outLen) },
    Entry("bitsec_runtime_describe_alloc") { a in
        var json: UnsafeMutablePointer<CChar>? = nil
        let rc = a.u64 == nil ? bitsec_runtime_describe_alloc(a.rt, nil, a.outLen) : bitsec_runtime_describe_alloc(a.rt, &json, a.outLen)
        bitsec_free(json)
        return rc
    },
    Entry("bitsec_runtime_open", rt: false, inputs: ["{}"]) { a in
        var h: OpaquePointer? = nil
        let rc = a.u64 == nil ? bitsec_runtime_open(a.p(0), a.l(0), nil) : bitsec_runtime_open(a.p(0), a.l(0), &h)
        bitsec_runtime_close(h)
        return rc
    },
    Entry("bitsec_runtime_open_file", rt: false, inputs: ["/nonexistent/bitsec.json"]) { a in
        var h: OpaquePointer? = nil
        let rc = a.u64 == nil ? bitsec_runtime_open_file(a.p(0), nil) : bitsec_runtime_open_file(a.p(0), &h)
        bitsec_runtime_close(h)
        return rc
    },
    Entry("bitsec_totp_check", rt: false, inputs: [secret, "287082"], ints: [0, 6, 30, 0, 1, 59]) { a in
        bitsec_totp_check(a.p(0), a.l(0), a.p(1), a.l(1), a.i(0), a.i(1), a.n[2], a.n[3], a.i(4), a.n[5], a.i32, a.i64)
    },
    Entry("bitsec_totp_code", rt: false, inputs: [secret], ints: [0, 6, 30, 0, 59]) { a in
        bitsec_totp_code(a.p(0), a.l(0), a.i(0), a.i(1), a.n[2], a.n[3], a.n[4], a.out, a.cap, a.outLen)
    },
    Entry("bitsec_totp_now", inputs: [secret], ints: [0]) { a in bitsec_totp_now(a.rt, a.p(0), a.l(0), a.n[0], a.out, a.cap, a.outLen) },
    Entry("bitsec_totp_provisioning_uri", inputs: [secret, "alice@example.com"]) { a in
        bitsec_totp_provisioning_uri(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_totp_secret_generate", rt: false, ints: [0]) { a in bitsec_totp_secret_generate(a.i(0), a.out, a.cap, a.outLen) },
    Entry("bitsec_totp_uri", rt: false, inputs: [secret, "alice@example.com", "Bitcorp"], ints: [0, 6, 30]) { a in
        bitsec_totp_uri(a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.i(0), a.i(1), a.n[2], a.out, a.cap, a.outLen)
    },
    Entry("bitsec_totp_verify", inputs: [secret, "287082", "u1"], ints: [59]) { a in
        bitsec_totp_verify(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.n[0], a.i32, a.i64, a.i64b)
    },
    Entry("bitsec_totp_secret_seal", inputs: [secret, "u1"]) { a in
        bitsec_totp_secret_seal(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_totp_verify_sealed", inputs: ["AQJrMQ", "287082", "u1"], ints: [59]) { a in
        bitsec_totp_verify_sealed(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.n[0], a.i32, a.i64, a.i64b)
    },
    Entry("bitsec_verify_token", inputs: [hsToken], ints: [0]) { a in
        bitsec_verify_token(a.rt, a.p(0), a.l(0), a.n[0], a.i32, a.out, a.cap, a.outLen)
    },
    Entry("bitsec_verify_token_at", inputs: [hsToken], ints: [0, 0]) { a in
        bitsec_verify_token_at(a.rt, a.p(0), a.l(0), a.n[0], a.i(1), a.i32, a.out, a.cap, a.outLen)
    },
    Entry("bitsec_token_sign", inputs: [#"{"sub": "u1", "exp": 4102444800}"#, "hs"]) { a in
        bitsec_token_sign(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_token_issue_pair", inputs: [#"{"sub": "u1"}"#, "hs"], ints: [0]) { a in
        bitsec_token_issue_pair(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.out, a.cap, a.outLen)
    },
    Entry("bitsec_token_refresh", inputs: [hsToken, "hs"], ints: [0]) { a in
        bitsec_token_refresh(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.i32, a.out, a.cap, a.outLen)
    },
    Entry("bitsec_token_revoke", inputs: ["jti-1"], ints: [4102444800, 0]) { a in
        bitsec_token_revoke(a.rt, a.p(0), a.l(0), a.n[0], a.n[1], a.i32)
    },
    Entry("bitsec_token_revoke_token", inputs: [hsToken], ints: [0]) { a in
        bitsec_token_revoke_token(a.rt, a.p(0), a.l(0), a.n[0], a.i32, a.i32b)
    },
    Entry("bitsec_token_revoke_session", inputs: ["session-1", "u1"], ints: [0]) { a in
        bitsec_token_revoke_session(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.i32)
    },
    Entry("bitsec_token_revoke_subject", inputs: ["u1"], ints: [0, 0]) { a in
        bitsec_token_revoke_subject(a.rt, a.p(0), a.l(0), a.n[0], a.n[1], a.i32)
    },
    Entry("bitsec_token_revoke_subject_in_tenant", inputs: ["u1", "t1"], ints: [0, 0]) { a in
        bitsec_token_revoke_subject_in_tenant(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.n[1], a.i32)
    },
    Entry("bitsec_token_is_revoked", inputs: ["jti-1"], ints: [0]) { a in
        bitsec_token_is_revoked(a.rt, a.p(0), a.l(0), a.n[0], a.i32)
    },
    Entry("bitsec_token_keys_reload", inputs: [#"{"keys": []}"#]) { a in
        bitsec_token_keys_reload(a.rt, a.p(0), a.l(0))
    },    // Three inputs (the scratch holds three); the user agent is NULL (the binding is the address).
    Entry("bitsec_session_create", inputs: ["u1", "t1", "203.0.113.7"], ints: [0]) { a in
        bitsec_session_create(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), nil, 0, a.n[0], a.out, a.out.map { $0 + 128 })
    },
    Entry("bitsec_session_validate", inputs: [sessionToken, "203.0.113.7", "Mozilla/5.0"], ints: [0]) { a in
        bitsec_session_validate(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.n[0], a.i32, a.out, a.cap, a.outLen)
    },
    Entry("bitsec_session_rotate", inputs: [sessionToken, "203.0.113.7", "Mozilla/5.0"], ints: [0]) { a in
        bitsec_session_rotate(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.n[0], a.i32, a.out, a.out.map { $0 + 128 })
    },
    Entry("bitsec_session_revoke", inputs: [sessionToken], ints: [0]) { a in
        bitsec_session_revoke(a.rt, a.p(0), a.l(0), a.n[0], a.i32)
    },
    Entry("bitsec_session_revoke_user", inputs: ["u1", "t1"], ints: [0]) { a in
        bitsec_session_revoke_user(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.i64)
    },
    Entry("bitsec_session_list", inputs: ["u1", "t1"], ints: [0]) { a in
        bitsec_session_list(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.out, a.cap, a.outLen)
    },
    Entry("bitsec_token_key_generate", rt: false, inputs: ["Ed25519"]) { a in
        bitsec_token_key_generate(a.p(0), a.l(0), a.out, a.cap, a.outLen)
    },
    // A real key does not fit the 64-byte inputs: the PEM here is cut short (malformed).
    Entry("bitsec_token_key_public_jwk", rt: false, inputs: ["-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAYSW5x0ncyzmesHYs\n"]) { a in
        bitsec_token_key_public_jwk(a.p(0), a.l(0), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_csrf_token_issue", inputs: ["session-1"], ints: [0]) { a in
        bitsec_csrf_token_issue(a.rt, a.p(0), a.l(0), a.n[0], a.out, a.cap, a.outLen)
    },
    Entry("bitsec_csrf_token_verify", inputs: ["session-1", "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], ints: [0]) { a in
        bitsec_csrf_token_verify(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.n[0], a.i32)
    },
    Entry("bitsec_csrf_cookie_issue", inputs: ["binding-1"], ints: [0]) { a in
        bitsec_csrf_cookie_issue(a.rt, a.p(0), a.l(0), a.n[0], a.out, a.cap, a.outLen)
    },
    Entry("bitsec_csrf_cookie_verify", inputs: ["binding-1", "cookie", "cookie"], ints: [0]) { a in
        bitsec_csrf_cookie_verify(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.n[0], a.i32)
    },
    Entry("bitsec_csrf_origin_check", inputs: ["POST", "https://app.example.com", "same-origin"]) { a in
        bitsec_csrf_origin_check(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.i32)
    },
    Entry("bitsec_csrf_keys_reload", inputs: [#"{"key": {"value": "\#(csrfKeyHex)", "encoding": "hex"}}"#]) { a in
        bitsec_csrf_keys_reload(a.rt, a.p(0), a.l(0))
    },
    Entry("bitsec_password_hash", inputs: ["correct horse battery staple"]) { a in
        bitsec_password_hash(a.rt, a.p(0), a.l(0), a.out, a.cap, a.outLen)
    },
    Entry("bitsec_password_verify", inputs: ["correct horse battery staple", storedPasswordHash]) { a in
        bitsec_password_verify(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.i32, a.i32b)
    },
    Entry("bitsec_password_needs_rehash", inputs: [storedPasswordHash]) { a in
        bitsec_password_needs_rehash(a.rt, a.p(0), a.l(0), a.i32)
    },
    Entry("bitsec_password_check", inputs: ["correct horse battery staple"], ints: [0]) { a in
        bitsec_password_check(a.rt, a.p(0), a.l(0), a.f(0), UnsafeMutableRawPointer(a.i32)?.assumingMemoryBound(to: UInt32.self), a.outLen)
    },
    Entry("bitsec_guard_check_request", inputs: ["a.b.c", "", "", "", "default", "k1"], ints: [1, 0, 0]) { a in
        // the structs carry the same (hostile) pointers and lengths as bitsec_guard_check's arguments
        var route = [UInt8](repeating: 0, count: 64)
        var request = [UInt8](repeating: 0, count: 144)
        route.withUnsafeMutableBytes { r in
            for (i, k) in [1, 2, 4].enumerated() {
                r.storeBytes(of: a.p(k), toByteOffset: 16 * i, as: UnsafePointer<CChar>?.self)
                r.storeBytes(of: a.l(k), toByteOffset: 16 * i + 8, as: UInt.self)
            }
            r.storeBytes(of: a.n[0], toByteOffset: 48, as: Int64.self)
            r.storeBytes(of: a.f(2), toByteOffset: 56, as: UInt32.self)
        }
        request.withUnsafeMutableBytes { q in
            for (i, k) in [0, 5, 3].enumerated() {
                q.storeBytes(of: a.p(k), toByteOffset: 16 * i, as: UnsafePointer<CChar>?.self)
                q.storeBytes(of: a.l(k), toByteOffset: 16 * i + 8, as: UInt.self)
            }
            q.storeBytes(of: a.n[1], toByteOffset: 48, as: Int64.self)
            q.storeBytes(of: a.out, toByteOffset: 56, as: UnsafeMutablePointer<CChar>?.self)
            q.storeBytes(of: a.cap, toByteOffset: 64, as: UInt.self)
        }
        return bitsec_guard_check_request(a.rt, &route, &request)
    },    // out_guard: the 128-byte status scratch (bitsec_guard_result is 64 bytes).
    Entry("bitsec_guard_check", inputs: ["a.b.c", "", "", "", "default", "k1"], ints: [1, 0, 0]) { a in
        bitsec_guard_check(a.rt, a.p(0), a.l(0), a.p(1), a.l(1), a.p(2), a.l(2), a.p(3), a.l(3), a.p(4), a.l(4),
                           a.p(5), a.l(5), a.n[0], a.n[1], a.f(2), UnsafeMutableRawPointer(a.i64), a.out, a.cap, a.outLen)
    },
]

/// A well-formed session token (of no session: the lookup path is exercised either way).
private let sessionToken = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAA"
private let csrfKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

/// A scrypt PHC string at the hostile runtime's parameters (ln 10; hash of another password).
private let storedPasswordHash = "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"

/// An HS256 token for the hostile runtime's key "hs" (signature need not verify: the
/// verification path is exercised either way).
private let hsToken = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzIn0.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl"

/// Exported functions without a status code, exercised by `functionsWithoutStatus`.
private let withoutStatus: Set<String> = [
    "bitsec_abi_version", "bitsec_field_bound", "bitsec_fernet_bound", "bitsec_field_reason_name", "bitsec_free",
    "bitsec_last_error", "bitsec_permission_reason", "bitsec_permission_reason_name", "bitsec_runtime_close", "bitsec_strerror", "bitsec_token_reason_name",
    "bitsec_csrf_reason_name",
    "bitsec_version_number", "bitsec_version_string",
]

// MARK: - Scratch memory

private let outBytesCount = 64 << 10

/// Memory the calls may write to, allocated once per test and filled with a pattern.
private final class Scratch {
    let inputs: [UnsafeMutablePointer<CChar>]
    let bad: UnsafeMutablePointer<CChar>
    let out = UnsafeMutablePointer<CChar>.allocate(capacity: outBytesCount)
    let outLen = UnsafeMutablePointer<UInt>.allocate(capacity: 1)
    let i32 = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    let i32b = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    let i64 = UnsafeMutablePointer<Int64>.allocate(capacity: 16)  // status arrays: up to 8 entries
    let i64b = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
    let u64 = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)

    init() {
        inputs = (0..<6).map { _ in  // the most (pointer, length) inputs of one function: bitsec_guard_check
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: inputBytes)
            p.initialize(repeating: 0, count: inputBytes)
            return p
        }
        bad = UnsafeMutablePointer<CChar>.allocate(capacity: invalidUTF8.count)
        for (k, byte) in invalidUTF8.enumerated() { bad[k] = CChar(bitPattern: byte) }
        out.initialize(repeating: 0x5A, count: outBytesCount)
    }

    deinit {
        for p in inputs { p.deallocate() }
        bad.deallocate()
        out.deallocate()
        outLen.deallocate()
        i32.deallocate()
        i32b.deallocate()
        i64.deallocate()
        i64b.deallocate()
        u64.deallocate()
    }

    /// Copies a well-formed input into slot k (truncated to the buffer, NUL-terminated).
    func set(_ k: Int, _ text: String) -> (UnsafePointer<CChar>?, UInt) {
        let bytes = Array(text.utf8.prefix(inputBytes - 1))
        inputs[k].initialize(repeating: 0, count: inputBytes)
        for (j, byte) in bytes.enumerated() { inputs[k][j] = CChar(bitPattern: byte) }
        return (UnsafePointer(inputs[k]), UInt(bytes.count))
    }

    /// Output arguments: (out, cap, out_len) and whether the scalar outputs are given.
    func outputs(_ variant: Int) -> (UnsafeMutablePointer<CChar>?, UInt, UnsafeMutablePointer<UInt>?, Bool) {
        switch variant % 6 {
        case 0: return (nil, 0, nil, false)
        case 1: return (nil, 0, outLen, true)
        case 2: return (out, 0, outLen, true)
        case 3: return (out, 1, outLen, false)
        case 4: return (out, UInt(outBytesCount), outLen, true)
        default: return (out, UInt(outBytesCount), nil, true)
        }
    }
}

// MARK: - Runtimes

/// A configuration with every capability (the size-query table uses it too).
func hostileConfig(_ dir: String) -> String {
    #"""
    {"allow_inline_secrets": true,
     "audit": {"sinks": [{"type": "file", "path": "\#(dir)/audit.log"}], "durability": "none"},
     "permissions": {"policy": {"resources": ["docs"], "actions": ["read", "write"], "roles": {"reader": {"allow": ["docs:read"]}}}},
     "fields": {"keys": [{"id": "k1", "secret": {"value": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "encoding": "hex"}}],
                "primary": "k1", "fernet": {"keys": [{"value": "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=", "encoding": "base64url"}]}},
     "rate_limits": {"categories": {"default": {"capacity": 5, "period_seconds": 10}}},
     "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}], "issuer": "iss", "audience": "aud"},
     "totp": {"backup_codes": {"count": 2, "iterations": 1000}},
     "sessions": {},
     "csrf": {"key": {"value": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "encoding": "hex"}, "allowed_origins": ["https://app.example.com"]},
     "passwords": {"ln": 10}}
    """#
}

/// A live runtime with every capability configured, and one that has been closed.
private func runtimes(_ dir: String) -> (live: OpaquePointer?, closed: OpaquePointer?) {
    let (rc, live) = open(hostileConfig(dir))
    #expect(rc == OK, "\(lastError())")
    // Which sections the closed one had does not matter: the handle is checked first.
    let (rc2, closed) = open(#"{"totp": {}}"#)
    #expect(rc2 == OK, "\(lastError())")
    bitsec_runtime_close(closed)
    return (live, closed)
}

private func isStatus(_ rc: Int32) -> Bool { (0...14).contains(rc) }

// MARK: - Tests

@Suite struct HostileInputTests {
    /// Every function of include/bitsec_api.h is in the table or in `withoutStatus`.
    @Test func exportedFunctionsAreAllCovered() throws {
        // #filePath is <root>/Tests/BitsecABITests/HostileInputTests.swift.
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let path = "/" + root + "/include/bitsec_api.h"
        guard let f = fopen(path, "r") else {
            Issue.record("cannot read \(path)")
            return
        }
        defer { fclose(f) }
        var names: Set<String> = []
        var line: UnsafeMutablePointer<CChar>? = nil
        var cap = 0
        while getline(&line, &cap, f) > 0 {
            let text = String(cString: line!)
            guard !text.hasPrefix("/"), !text.hasPrefix(" "), let paren = text.firstIndex(of: "(") else { continue }
            // "int32_t bitsec_x(", "char const *bitsec_y(": the last word before the parenthesis.
            guard let word = text[..<paren].split(whereSeparator: { $0 == " " || $0 == "*" }).last,
                  word.hasPrefix("bitsec_") else { continue }
            names.insert(String(word))
        }
        free(line)
        let covered = Set(table.map(\.name)).union(withoutStatus)
        #expect(names.count >= 50, "parsed \(names.count) functions from \(path)")
        #expect(names.subtracting(covered).isEmpty, "exported functions without a hostile-input entry: \(names.subtracting(covered).sorted())")
        #expect(covered.subtracting(names).isEmpty, "entries for functions that are not exported: \(covered.subtracting(names).sorted())")
        #expect(table.count == Set(table.map(\.name)).count)
    }

    /// NULL, zero, huge and invalid-UTF-8 inputs, with every kind of output argument, on a
    /// NULL, a live and a closed handle.
    @Test(arguments: table.map(\.name))
    func hostileInputs(_ name: String) {
        let entry = table.first { $0.name == name }!
        let dir = makeTempDir("hostile")
        defer { removeTempDir(dir) }
        let (live, closed) = runtimes(dir)
        defer { bitsec_runtime_close(live) }
        let scratch = Scratch()
        let slots = max(entry.inputs.count, 1)

        // Input patterns: the same hostile value in every slot, then in one slot at a time
        // with the others well-formed.
        enum Pattern { case null(UInt), zero, huge(UInt), badUTF8, wellFormed }
        var patterns: [Pattern] = [.null(0), .null(1), .null(16), .zero, .badUTF8, .wellFormed]
        patterns += hugeLengths.map { .huge($0) }

        func input(_ k: Int, _ pattern: Pattern) -> (UnsafePointer<CChar>?, UInt) {
            switch pattern {
            case .null(let n): return (nil, n)
            case .zero: return (UnsafePointer(scratch.inputs[k]), 0)
            case .huge(let n): return (UnsafePointer(scratch.inputs[k]), n)
            case .badUTF8: return (UnsafePointer(scratch.bad), UInt(invalidUTF8.count - 1))
            case .wellFormed: return k < entry.inputs.count ? scratch.set(k, entry.inputs[k]) : (nil, 0)
            }
        }

        var calls = 0
        var variant = 0
        for (rtName, rt) in [("NULL", nil), ("live", live), ("closed", closed)] as [(String, OpaquePointer?)] {
            if !entry.takesRuntime && rtName != "live" { continue }
            var cases: [([(UnsafePointer<CChar>?, UInt)], String, Bool)] = []  // inputs, label, has a huge length
            for p in patterns {
                cases.append(((0..<slots).map { input($0, p) }, "all \(p)", { if case .huge = p { return entry.inputs.count > 0 } else { return false } }()))
                guard entry.inputs.count > 1 else { continue }
                for k in 0..<entry.inputs.count {
                    let s = (0..<slots).map { $0 == k ? input($0, p) : input($0, .wellFormed) }
                    cases.append((s, "slot \(k) \(p)", { if case .huge = p { return true } else { return false } }()))
                }
            }
            for (inputs, label, huge) in cases {
                for repeatOutputs in 0..<2 {
                    variant += 1
                    let (out, cap, outLen, scalars) = scratch.outputs(variant + repeatOutputs * 3)
                    let args = Args(rt: rt, s: inputs, n: entry.ints, out: out, cap: cap, outLen: outLen,
                                    i32: scalars ? scratch.i32 : nil, i32b: scalars ? scratch.i32b : nil,
                                    i64: scalars ? scratch.i64 : nil, i64b: scalars ? scratch.i64b : nil,
                                    u64: scalars ? scratch.u64 : nil)
                    let rc = entry.call(args)
                    calls += 1
                    #expect(isStatus(rc), "\(name) rt=\(rtName) \(label): \(rc)")
                    #expect(strlen(bitsec_last_error()) < 512)
                    if entry.takesRuntime && rtName == "NULL" { #expect(rc == E_INVALID, "\(name) NULL rt \(label): \(rc)") }
                    if entry.takesRuntime && rtName == "closed" { #expect(rc == E_CLOSED, "\(name) closed rt \(label): \(rc)") }
                    if huge { #expect(rc != OK, "\(name) rt=\(rtName) accepted a huge length (\(label))") }
                }
            }
        }
        #expect(calls > 0)
    }

    /// Edge integers (negative, zero, INT64_MIN/MAX, past year 9999) in each integer
    /// argument, alone and all at once, with well-formed inputs: no overflow trap.
    @Test(arguments: table.filter { !$0.ints.isEmpty }.map(\.name))
    func edgeIntegerArguments(_ name: String) {
        let entry = table.first { $0.name == name }!
        let dir = makeTempDir("hostile")
        defer { removeTempDir(dir) }
        let (live, _) = runtimes(dir)
        defer { bitsec_runtime_close(live) }
        let scratch = Scratch()
        let inputs = (0..<entry.inputs.count).map { scratch.set($0, entry.inputs[$0]) }
        var vectors: [[Int64]] = []
        for k in 0..<entry.ints.count {
            for e in edgeIntegers {
                var v = entry.ints
                v[k] = e
                vectors.append(v)
            }
        }
        for e in edgeIntegers { vectors.append(Array(repeating: e, count: entry.ints.count)) }
        vectors.append((0..<entry.ints.count).map { $0 % 2 == 0 ? Int64.min : Int64.max })
        vectors.append((0..<entry.ints.count).map { $0 % 2 == 0 ? Int64.max : Int64.min })
        for v in vectors {
            let args = Args(rt: live, s: inputs, n: v, out: scratch.out, cap: UInt(outBytesCount), outLen: scratch.outLen,
                            i32: scratch.i32, i32b: scratch.i32b, i64: scratch.i64, i64b: scratch.i64b, u64: scratch.u64)
            let rc = entry.call(args)
            #expect(isStatus(rc), "\(name) ints=\(v): \(rc)")
        }
    }

    /// The functions that return no status code: documented values for any argument.
    @Test func functionsWithoutStatus() {
        #expect(bitsec_abi_version() == BitsecABI.BITSEC_ABI_VERSION)
        #expect(bitsec_version_number() == BitsecABI.BITSEC_VERSION_NUMBER)
        #expect(String(cString: bitsec_version_string()) == BitsecABI.BITSEC_VERSION_STRING)
        #expect(strlen(bitsec_last_error()) < 512)
        for code in [Int32.min, -1, 0, 1, 14, 15, 255, 256, Int32.max] {
            #expect(strlen(bitsec_strerror(code)) > 0)
            #expect(strlen(bitsec_permission_reason(code)) > 0)
            #expect(strlen(bitsec_permission_reason_name(code)) > 0)
            #expect(strlen(bitsec_field_reason_name(code)) > 0)
            #expect(strlen(bitsec_token_reason_name(code)) > 0)
            #expect(strlen(bitsec_csrf_reason_name(code)) > 0)
        }
        for n in hugeLengths {
            #expect(bitsec_field_bound(n, 0) == 0)
            #expect(bitsec_fernet_bound(n) == 0)
        }
        for flags in [UInt32.max, 1 << 31, 4] { #expect(bitsec_field_bound(16, flags) == 0) }
        #expect(bitsec_field_bound(0, 0) > 0)
        #expect(bitsec_fernet_bound(0) > 0)
        bitsec_free(nil)
        bitsec_runtime_close(nil)
        // Closing twice, and closing a handle that another thread is closing, is a no-op.
        let (rc, rt) = open("{}")
        #expect(rc == OK)
        bitsec_runtime_close(rt)
        bitsec_runtime_close(rt)
    }
}

// MARK: - Sanitizer findings

/// Regression tests for what `make sanitize` found (docs/sanitizers.md). They pass in any
/// build; the sanitizer builds are what turn the original bugs into failures.
@Suite struct SanitizerRegressionTests {
    /// ASan, heap-use-after-free in OpenSSL's OSSL_PARAM_locate: the per-digest HMAC
    /// templates of the OTP code (BitsecCore/TOTP/OTPGenerator.swift) built their "digest"
    /// OSSL_PARAM with a Swift String literal as the key, whose bridged C string is freed
    /// before EVP_MAC_CTX_set_params reads it. Each algorithm has its own template, built on
    /// first use, from a fresh thread here: RFC 6238 appendix B vectors at T = 59.
    @Test(arguments: [
        (Int32(0), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "94287082"),
        (Int32(1), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA", "46119246"),
        (Int32(2), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNA", "90693936"),
    ])
    func otpHMACTemplateOfEachAlgorithm(_ algorithm: Int32, _ secret: String, _ expected: String) {
        var code = [CChar](repeating: 0, count: 16)
        var n: UInt = 0
        let rc = bitsec_totp_code(secret, UInt(secret.utf8.count), algorithm, 8, 30, 0, 59, &code, UInt(code.count), &n)
        #expect(rc == OK, "\(lastError())")
        #expect(String(cString: code) == expected)
    }
}
