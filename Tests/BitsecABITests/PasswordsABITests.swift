import Testing
import Glibc
import Bitsec

private typealias A = BitsecABI

private func hash(_ rt: OpaquePointer?, _ pw: String) -> (Int32, String) {
    var buf = [CChar](repeating: 0, count: Int(A.BITSEC_PASSWORD_MAX_HASH_BYTES))
    var n: UInt = 0
    let rc = bitsec_password_hash(rt, pw, UInt(pw.utf8.count), &buf, UInt(buf.count), &n)
    return (rc, String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

private func verify(_ rt: OpaquePointer?, _ pw: String, _ stored: String?) -> (rc: Int32, reason: Int32, rehash: Int32) {
    var reason: Int32 = -1, rehash: Int32 = -1
    let rc: Int32
    if let stored {
        rc = bitsec_password_verify(rt, pw, UInt(pw.utf8.count), stored, UInt(stored.utf8.count), &reason, &rehash)
    } else {
        rc = bitsec_password_verify(rt, pw, UInt(pw.utf8.count), nil, 0, &reason, &rehash)
    }
    return (rc, reason, rehash)
}

private func check(_ rt: OpaquePointer?, _ pw: String, _ flags: UInt32 = 0) -> (rc: Int32, reasons: UInt32, length: UInt) {
    var reasons: UInt32 = 99
    var length: UInt = 99
    let rc = bitsec_password_check(rt, pw, UInt(pw.utf8.count), flags, &reasons, &length)
    return (rc, reasons, length)
}

@Suite struct PasswordsABITests {
    @Test func hashVerifyAndRehashThroughTheABI() throws {
        let (rc, rt) = open(#"{"passwords": {"ln": 10}}"#)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        let (hrc, h) = hash(rt, "correct horse battery staple")
        #expect(hrc == OK)
        #expect(h.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        #expect(verify(rt, "correct horse battery staple", h) == (OK, A.BITSEC_PASSWORD_MATCH, 0))
        #expect(verify(rt, "wrong horse battery staple", h) == (OK, A.BITSEC_PASSWORD_MISMATCH, 0))
        #expect(verify(rt, "correct horse battery staple", nil) == (OK, A.BITSEC_PASSWORD_MISMATCH, 0))
        // Older parameters: a match that asks for a rehash.
        let (orc, old) = open(#"{"passwords": {"ln": 11}}"#)
        #expect(orc == OK)
        let (_, oldHash) = hash(old, "correct horse battery staple")
        bitsec_runtime_close(old)
        #expect(verify(rt, "correct horse battery staple", oldHash) == (OK, A.BITSEC_PASSWORD_MATCH, 1))
        var needs: Int32 = -1
        #expect(bitsec_password_needs_rehash(rt, oldHash, UInt(oldHash.utf8.count), &needs) == OK && needs == 1)
        #expect(bitsec_password_needs_rehash(rt, h, UInt(h.utf8.count), &needs) == OK && needs == 0)
        let legacy = "scrypt$16384$8$1$c2FsdA==$aGFzaA=="
        #expect(bitsec_password_needs_rehash(rt, legacy, UInt(legacy.utf8.count), &needs) == OK && needs == 1)
        // Errors are not decisions: another scheme, a malformed value, a hash too costly.
        #expect(verify(rt, "x", legacy).rc == BitsecABI.BITSEC_E_MALFORMED)
        #expect(verify(rt, "x", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA").rc == BitsecABI.BITSEC_E_UNSUPPORTED)
        let costly = "$scrypt$ln=24,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
        let e = verify(rt, "x", costly)
        #expect(e.rc == BitsecABI.BITSEC_E_TOO_LARGE && e.reason == A.BITSEC_PASSWORD_MISMATCH)
        // Size query: the length without hashing.
        var n: UInt = 0
        #expect(bitsec_password_hash(rt, "pw", 2, nil, 0, &n) == BitsecABI.BITSEC_E_BUFFER_TOO_SMALL && Int(n) == h.utf8.count)
        // Invalid UTF-8 is refused, never hashed.
        let bad: [CChar] = [0x61, -1, 0x62]
        var buf = [CChar](repeating: 0, count: 256)
        #expect(bitsec_password_hash(rt, bad, 3, &buf, 256, &n) == E_INVALID)
    }

    @Test func policyThroughTheABI() throws {
        let (rc, rt) = open(#"{"passwords": {"ln": 10}}"#)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        #expect(check(rt, "fifteen chars!!") == (OK, 0, 15))
        #expect(check(rt, "fourteen chars") == (OK, A.BITSEC_PASSWORD_POLICY_TOO_SHORT, 14))
        #expect(check(rt, "eight ch", A.BITSEC_PASSWORD_FLAG_MFA) == (OK, 0, 8))
        #expect(check(rt, "password", A.BITSEC_PASSWORD_FLAG_MFA) == (OK, A.BITSEC_PASSWORD_POLICY_BLOCKLISTED, 8))
        #expect(check(rt, String(repeating: "\u{1F600}", count: 64)) == (OK, 0, 64))
        #expect(check(rt, String(repeating: "a", count: 129)) == (OK, A.BITSEC_PASSWORD_POLICY_TOO_LONG, 129))
        #expect(check(rt, "x", 2).rc == E_INVALID)
        // Not configured without the section.
        let (rc2, none) = open("{}")
        #expect(rc2 == OK)
        defer { bitsec_runtime_close(none) }
        #expect(check(none, "fifteen chars!!").rc == E_NOT_CONFIGURED)
        #expect(verify(none, "x", nil).rc == E_NOT_CONFIGURED)
    }
}
