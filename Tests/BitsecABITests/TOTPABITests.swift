// The totp functions through the exported C ABI only.
import Testing
import Glibc
import Bitsec

private let TOTP_OK = BitsecABI.BITSEC_TOTP_OK, TOTP_WRONG = BitsecABI.BITSEC_TOTP_WRONG_CODE, TOTP_REPLAYED = BitsecABI.BITSEC_TOTP_REPLAYED, TOTP_THROTTLED = BitsecABI.BITSEC_TOTP_THROTTLED, TOTP_MALFORMED = BitsecABI.BITSEC_TOTP_MALFORMED_CODE
private let E_MALFORMED = BitsecABI.BITSEC_E_MALFORMED

/// Calls an (out_buf, out_cap, out_len) function and returns (status, text).
private func output(_ body: (UnsafeMutablePointer<CChar>?, UInt, UnsafeMutablePointer<UInt>?) -> Int32) -> (Int32, String) {
    var buf = [CChar](repeating: 0, count: 4096)
    var n: UInt = 0
    let rc = buf.withUnsafeMutableBufferPointer { body($0.baseAddress, 4096, &n) }
    guard rc == OK else { return (rc, "") }
    return (rc, String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

private func generate(_ bits: Int32 = 0) -> String {
    output { bitsec_totp_secret_generate(bits, $0, $1, $2) }.1
}

private func totpCode(_ s: String, at: Int64, alg: Int32 = 0, digits: Int32 = 6, period: Int64 = 30) -> String {
    output { b, c, n in bitsec_totp_code(s, UInt(s.utf8.count), alg, digits, period, 0, at, b, c, n) }.1
}

private func verify(_ rt: OpaquePointer?, _ s: String, _ code: String, _ user: String?, at: Int64) -> (Int32, Int32, Int64, Int64) {
    var reason: Int32 = -1, step: Int64 = 0, retry: Int64 = 0
    let rc = bitsec_totp_verify(rt, s, UInt(s.utf8.count), code, UInt(code.utf8.count), user, UInt(user?.utf8.count ?? 0), at, &reason, &step, &retry)
    return (rc, reason, step, retry)
}

@Suite struct TOTPABITests {
    @Test func secretGeneration() {
        let s = generate()
        #expect(s.count == 32)
        #expect(generate(128).count == 26)
        #expect(generate(512).count == 103)
        var n: UInt = 0
        #expect(bitsec_totp_secret_generate(120, nil, 0, &n) == E_INVALID)
        #expect(bitsec_totp_secret_generate(0, nil, 0, &n) == E_BUFFER)
        #expect(n == 32)
        #expect(bitsec_totp_secret_generate(0, nil, 0, nil) == E_INVALID)
    }

    @Test func rfc4226AndStatelessCheck() {
        let s = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        let expected = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]
        for (i, e) in expected.enumerated() {
            #expect(output { bitsec_hotp_code(s, UInt(s.utf8.count), 0, 6, UInt64(i), $0, $1, $2) }.1 == e)
        }
        var reason: Int32 = -1, counter: UInt64 = 0
        #expect(bitsec_hotp_check(s, 32, "969429", 6, 0, 6, 1, 5, &reason, &counter) == OK)
        #expect(reason == TOTP_OK && counter == 3)
        #expect(bitsec_hotp_check(s, 32, "969429", 6, 0, 6, 4, 5, &reason, &counter) == OK)
        #expect(reason == TOTP_WRONG)
        #expect(bitsec_hotp_check(s, 32, "96942", 5, 0, 6, 0, 5, &reason, nil) == OK)
        #expect(reason == TOTP_MALFORMED)
        #expect(bitsec_hotp_check(s, 32, "969429", 6, 0, 6, 0, 101, &reason, nil) == E_INVALID)
        #expect(reason == TOTP_WRONG)  // an error never leaves an acceptance behind
        // RFC 6238, SHA-1 at 59 s.
        var step: Int64 = 0
        #expect(bitsec_totp_check(s, 32, "94287082", 8, 0, 8, 30, 0, 0, 59, &reason, &step) == OK)
        #expect(reason == TOTP_OK && step == 1)
        #expect(bitsec_totp_check(s, 32, "94287082", 8, 0, 8, 30, 0, 0, 119, &reason, &step) == OK)
        #expect(reason == TOTP_WRONG && step == -1)
        #expect(bitsec_totp_check(s, 32, "94287082", 8, 0, 8, 30, 0, 1, 89, &reason, &step) == OK)
        #expect(reason == TOTP_OK && step == 1)
    }

    @Test func hostileArguments() {
        let s = generate()
        var reason: Int32 = -1, step: Int64 = 0
        #expect(bitsec_totp_check(nil, 32, "123456", 6, 0, 6, 30, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, nil, 6, 0, 6, 30, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 30, 0, 1, 0, nil, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, UInt.max, "123456", 6, 0, 6, 30, 0, 1, 0, &reason, &step) == E_TOO_LARGE)
        #expect(bitsec_totp_check(s, 32, "123456", UInt.max, 0, 6, 30, 0, 1, 0, &reason, &step) == E_TOO_LARGE)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 3, 6, 30, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, -1, 6, 30, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 5, 30, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 9, 30, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 0, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, Int64.min, 0, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 30, Int64.max, 1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 30, 0, -1, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 30, 0, 11, 0, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 30, 0, 1, -5, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 30, 0, 1, Int64.max, &reason, &step) == E_INVALID)
        #expect(bitsec_totp_check(s, 32, "123456", 6, 0, 6, 30, 1000, 1, 999, &reason, &step) == E_INVALID)
        #expect(bitsec_hotp_check(s, 32, "123456", 6, 0, 6, UInt64.max, 10, &reason, nil) == E_INVALID)
        // An undecodable secret is an error whose message does not quote it.
        let bad = "THIS-IS-NOT-BASE32"
        #expect(bitsec_totp_check(bad, UInt(bad.utf8.count), "123456", 6, 0, 6, 30, 0, 1, 0, &reason, &step) == E_MALFORMED)
        #expect(lastError().contains("base32") && !lastError().contains(bad))
        // Malformed codes of every kind are decisions.
        for code in ["", "1", "12345a", "1234567", "\u{0}23456", "12 456"] {
            #expect(bitsec_totp_check(s, 32, code, UInt(code.utf8.count), 0, 6, 30, 0, 1, 0, &reason, &step) == OK)
            #expect(reason == TOTP_MALFORMED)
        }
        // NULL code with length 0 is the empty code: malformed, not a crash.
        #expect(bitsec_totp_check(s, 32, nil, 0, 0, 6, 30, 0, 1, 0, &reason, &step) == OK)
        #expect(reason == TOTP_MALFORMED)
    }

    @Test func provisioningURIs() {
        let s = "jbswy3dpehpk3pxp"
        let (rc, uri) = output { b, c, n in bitsec_totp_uri(s, 16, "alice@bitcorp.example", 21, "Bitcorp ERP", 11, 1, 8, 60, b, c, n) }
        #expect(rc == OK)
        #expect(uri == "otpauth://totp/Bitcorp%20ERP:alice@bitcorp.example?secret=JBSWY3DPEHPK3PXP&issuer=Bitcorp%20ERP&algorithm=SHA256&digits=8&period=60")
        #expect(output { b, c, n in bitsec_totp_uri(s, 16, "bob", 3, nil, 0, 0, 6, 30, b, c, n) }.1
                == "otpauth://totp/bob?secret=JBSWY3DPEHPK3PXP&algorithm=SHA1&digits=6&period=30")
        var n: UInt = 0
        #expect(bitsec_totp_uri(s, 16, "a:b", 3, nil, 0, 0, 6, 30, nil, 0, &n) == E_INVALID)
        #expect(bitsec_totp_uri(s, 16, "bob", 3, nil, 0, 0, 6, 30, nil, 0, &n) == E_BUFFER)
        #expect(n == 76)
        let bytes: [CChar] = [0x61, CChar(bitPattern: 0xFF)]
        #expect(bitsec_totp_uri(s, 16, bytes, 2, nil, 0, 0, 6, 30, nil, 0, &n) == E_INVALID)
        // Through a runtime: its parameters and issuer.
        let (orc, rt) = open(#"{"totp": {"issuer": "Bitcorp ERP", "digits": 8}}"#)
        #expect(orc == OK)
        defer { bitsec_runtime_close(rt) }
        #expect(output { b, c, n in bitsec_totp_provisioning_uri(rt, s, 16, "carol", 5, b, c, n) }.1
                == "otpauth://totp/Bitcorp%20ERP:carol?secret=JBSWY3DPEHPK3PXP&issuer=Bitcorp%20ERP&algorithm=SHA1&digits=8&period=30")
        #expect(output { b, c, n in bitsec_totp_now(rt, s, 16, 59, b, c, n) }.1.count == 8)
    }

    @Test func verifyNotConfiguredAndClosed() {
        let (rc, rt) = open("{}")
        #expect(rc == OK)
        let s = generate()
        #expect(verify(rt, s, "123456", "u", at: 0).0 == E_NOT_CONFIGURED)
        #expect(verify(rt, s, "123456", "u", at: 0).1 == TOTP_WRONG)
        bitsec_runtime_close(rt)
        #expect(verify(rt, s, "123456", "u", at: 0).0 == E_CLOSED)
        #expect(verify(nil, s, "123456", "u", at: 0).0 == E_INVALID)
    }

    @Test func verifyReplayThrottle() {
        let (rc, rt) = open(#"{"totp": {"throttle": {"max_failures": 2, "window_s": 60}}}"#)
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        let s = generate()
        let at: Int64 = 1_700_000_000
        let code = totpCode(s, at: at)
        #expect(verify(rt, s, code, "alice", at: at) == (OK, TOTP_OK, at / 30, 0))
        #expect(verify(rt, s, code, "alice", at: at) == (OK, TOTP_REPLAYED, at / 30, 0))
        #expect(verify(rt, s, "12345", "alice", at: at) == (OK, TOTP_MALFORMED, -1, 0))
        let wrong = code == "000000" ? "111111" : "000000"
        let r = verify(rt, s, wrong, "alice", at: at + 1)
        #expect(r.1 == TOTP_WRONG || r.1 == TOTP_OK)  // 1 in 10^6/3 that 000000 is a code of the window
        #expect(verify(rt, s, totpCode(s, at: at + 30), "alice", at: at + 30) == (OK, TOTP_THROTTLED, -1, 30))
        // Bad user text.
        let badUser: [CChar] = [0x61, CChar(bitPattern: 0xC3)]
        var reason: Int32 = 0
        #expect(bitsec_totp_verify(rt, s, 32, code, 6, badUser, 2, at, &reason, nil, nil) == E_INVALID)
        #expect(bitsec_totp_verify(rt, s, 32, code, 6, "u", 300, at, &reason, nil, nil) == E_TOO_LARGE)
        #expect(bitsec_totp_verify(rt, s, 32, code, 6, "u", 1, at, nil, nil, nil) == E_INVALID)
    }

    @Test func replayAcrossRuntimesThroughRedis() {
        guard let redis = redisConfig() else { return }
        let cfg = String(redis.dropLast()) + #", "totp": {"state": "redis"}}"#
        let (r1, a) = open(cfg), (r2, b) = open(cfg)
        #expect(r1 == OK && r2 == OK)
        defer { bitsec_runtime_close(a); bitsec_runtime_close(b) }
        let s = generate()
        let user = "abi-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let code = totpCode(s, at: 0)
        #expect(verify(a, s, code, user, at: 0).1 == TOTP_OK)
        #expect(verify(b, s, code, user, at: 0).1 == TOTP_REPLAYED)
    }

    @Test func backupCodes() {
        let (rc, rt) = open(#"{"totp": {"backup_codes": {"count": 4, "iterations": 1000}}}"#)
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        let (grc, lines) = output { bitsec_backup_code_generate(rt, 0, $0, $1, $2) }
        #expect(grc == OK)
        let rows = lines.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        #expect(rows.count == 4 && rows.allSatisfy { $0.count == 2 })
        let hashes = rows.map { $0[1] }.joined(separator: "\n")
        var reason: Int32 = -1, index: Int32 = 0, retry: Int64 = 0
        let code = rows[2][0]
        #expect(bitsec_backup_code_verify(rt, "dave", 4, code, UInt(code.utf8.count), hashes, UInt(hashes.utf8.count), 0, &reason, &index, &retry) == OK)
        #expect(reason == TOTP_OK && index == 2)
        #expect(bitsec_backup_code_verify(rt, "dave", 4, code, UInt(code.utf8.count), hashes, UInt(hashes.utf8.count), 0, &reason, &index, &retry) == OK)
        #expect(reason == TOTP_REPLAYED && index == 2)
        #expect(bitsec_backup_code_verify(rt, nil, 0, code, UInt(code.utf8.count), hashes, UInt(hashes.utf8.count), 0, &reason, &index, &retry) == E_INVALID)
        #expect(bitsec_backup_code_verify(rt, "dave", 4, code, UInt(code.utf8.count), "junk", 4, 0, &reason, &index, &retry) == E_MALFORMED)
        #expect(reason == TOTP_WRONG && index == -1)
        var n: UInt = 0
        #expect(bitsec_backup_code_generate(rt, 65, nil, 0, &n) == E_INVALID)
        #expect(bitsec_backup_code_generate(rt, 1, nil, 0, &n) == E_BUFFER)
        #expect(n > 60)
    }

    // MARK: - Sealed secrets

    static let fieldsKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    static let sealedConfig = #"{"allow_inline_secrets": true, "fields": {"keys": [{"id": "k1", "secret": {"value": "\#(fieldsKey)", "encoding": "hex"}}]}, "totp": {"throttle": {"max_failures": 2, "window_s": 60}}}"#

    func seal(_ rt: OpaquePointer?, _ s: String, _ user: String) -> (Int32, String) {
        output { b, c, n in bitsec_totp_secret_seal(rt, s, UInt(s.utf8.count), user, UInt(user.utf8.count), b, c, n) }
    }

    func verifySealed(_ rt: OpaquePointer?, _ sealed: String, _ code: String, _ user: String, at: Int64) -> (Int32, Int32, Int64, Int64) {
        var reason: Int32 = -1, step: Int64 = 0, retry: Int64 = 0
        let rc = bitsec_totp_verify_sealed(rt, sealed, UInt(sealed.utf8.count), code, UInt(code.utf8.count), user, UInt(user.utf8.count),
                                           at, &reason, &step, &retry)
        return (rc, reason, step, retry)
    }

    @Test func sealedSecrets() {
        let (rc, rt) = open(Self.sealedConfig)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        let s = generate()
        let (src, sealed) = seal(rt, s, "alice")
        #expect(src == OK)
        #expect(sealed.utf8.count <= 512 && !sealed.contains(s))
        // Buffer sizing: the length needed is reported.
        var n: UInt = 0
        #expect(bitsec_totp_secret_seal(rt, s, 32, "alice", 5, nil, 0, &n) == E_BUFFER)
        #expect(n == UInt(sealed.utf8.count))
        // The documented context opens it through the field API.
        let ctx = "bitsec.totp.secret|alice"
        var plain = [UInt8](repeating: 0, count: 128)
        var reason: Int32 = -1, pn: UInt = 0
        let token = Array(sealed.utf8)
        #expect(bitsec_decrypt_field(rt, token, UInt(token.count), ctx, UInt(ctx.utf8.count), &plain, 128, &pn, &reason) == OK)
        #expect(reason == 0 && String(decoding: plain.prefix(Int(pn)), as: UTF8.self) == s)
        let at: Int64 = 1_700_000_000
        let code = totpCode(s, at: at)
        #expect(verifySealed(rt, sealed, code, "alice", at: at) == (OK, TOTP_OK, at / 30, 0))
        #expect(verifySealed(rt, sealed, code, "alice", at: at) == (OK, TOTP_REPLAYED, at / 30, 0))
        #expect(verify(rt, s, code, "alice", at: at) == (OK, TOTP_REPLAYED, at / 30, 0))  // one state per user
        #expect(verifySealed(rt, sealed, "12345", "alice", at: at) == (OK, TOTP_MALFORMED, -1, 0))
        // The two replays were failures (max 2 in 60 s): throttled, 60 s after the first.
        #expect(verifySealed(rt, sealed, totpCode(s, at: at + 30), "alice", at: at + 30) == (OK, TOTP_THROTTLED, -1, 30))
        // Copied to another user: an error naming the reason, never an acceptance.
        let bob = verifySealed(rt, sealed, totpCode(s, at: at + 60), "bob", at: at + 60)
        #expect(bob.0 == E_MALFORMED && bob.1 == TOTP_WRONG)
        #expect(lastError().contains("wrong_context"))
        // Tampered.
        var t = Array(sealed.utf8)
        t[t.count - 3] = t[t.count - 3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        #expect(verifySealed(rt, String(decoding: t, as: UTF8.self), code, "alice", at: at).0 == E_MALFORMED)
        // Arguments.
        #expect(seal(rt, s, "").0 == E_INVALID)
        #expect(seal(rt, "not base32!", "alice").0 == E_MALFORMED)
        #expect(verifySealed(rt, sealed, code, "", at: at).0 == E_INVALID)
        #expect(verifySealed(rt, String(repeating: "A", count: 513), code, "alice", at: at).0 == E_TOO_LARGE)
        #expect(bitsec_totp_verify_sealed(rt, sealed, UInt(sealed.utf8.count), code, 6, "alice", 5, at, nil, nil, nil) == E_INVALID)
    }

    @Test func sealedSecretsNeedTheFieldsSection() {
        let (rc, rt) = open(#"{"totp": {}}"#)
        #expect(rc == OK)
        defer { bitsec_runtime_close(rt) }
        #expect(seal(rt, generate(), "alice").0 == E_NOT_CONFIGURED)
        #expect(lastError().contains("fields section"))
        let r = verifySealed(rt, "x", "123456", "alice", at: 0)
        #expect(r.0 == E_NOT_CONFIGURED && r.1 == TOTP_WRONG)
        let (frc, fields) = open(#"{"allow_inline_secrets": true, "fields": {"keys": [{"id": "k1", "secret": {"value": "\#(Self.fieldsKey)", "encoding": "hex"}}]}}"#)
        #expect(frc == OK)
        defer { bitsec_runtime_close(fields) }
        #expect(seal(fields, generate(), "alice").0 == E_NOT_CONFIGURED)
        #expect(lastError().contains("totp section"))
    }
}
