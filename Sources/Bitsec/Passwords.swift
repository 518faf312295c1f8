// Passwords: scrypt hashes in the PHC string format, verification (with the dummy
// verification of unknown users), needs-rehash and the NIST SP 800-63B-4 policy check.
// Decoding and encoding only; the decisions are BitsecCore's.
internal import BitsecCore

/// A password argument: at most BITSEC_PASSWORD_MAX_BYTES of valid UTF-8 (NULL with length 0
/// is the empty password).
private func passwordArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> UnsafeRawBufferPointer {
    let raw = try boundedBytesArg(p, len, "password", max: PasswordService.maxPasswordBytes)
    guard UTF8Validation.isValid(raw) else { throw .invalid("password is not valid UTF-8") }
    return raw
}

/// Hashes a password with scrypt at the configured parameters and a fresh random salt, as a
/// PHC string: `$scrypt$ln=17,r=8,p=1$<salt>$<hash>` (salt and hash in standard base64
/// without padding).
///
/// rt: an open runtime with a `passwords` section.
/// password, password_len: the password as NFKC-normalised UTF-8 (the library does not
/// normalise: normalise before hashing, checking and verifying, as the Python binding does),
/// at most BITSEC_PASSWORD_MAX_BYTES; caller-owned, only read.
/// out_buf, out_cap: caller-owned buffer; BITSEC_PASSWORD_MAX_HASH_BYTES holds any hash.
/// out_len: receives the string's length (a NUL follows when there is room), also when the
/// buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT (NULL, not UTF-8); BITSEC_E_TOO_LARGE;
/// BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Cost: one scrypt (128 MiB and roughly 0.4 s of CPU at the defaults): call it from a
/// worker thread, not an event loop.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_password_hash)
public func bitsec_password_hash(_ rt: OpaquePointer?, _ password: UnsafePointer<CChar>?, _ password_len: UInt,
                                 _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let s = try r.require(r.passwords)
        let pw = try passwordArg(password, password_len)
        let outLen = try requiredOut(out_len, "out_len")
        // The length is known before hashing: a size query costs no scrypt.
        let n = s.hashTextLength
        guard out_buf != nil, out_cap >= UInt(n) else {
            outLen.pointee = UInt(n)
            throw BitsecError(.bufferTooSmall, "output needs \(n) bytes, out_cap is \(out_cap)")
        }
        try writeOutput(try s.hash(pw), out_buf, out_cap, outLen)
    }
}

/// Verifies a password against a stored PHC string; with stored NULL (length 0), runs the
/// dummy verification for an unknown (or disabled) account: the same scrypt work at the
/// configured parameters, never a match, so the response time does not tell whether the
/// account exists.
///
/// rt: an open runtime with a `passwords` section.
/// password, password_len: as bitsec_password_hash.
/// stored, stored_len: the stored hash (at most BITSEC_PASSWORD_MAX_HASH_BYTES), or NULL
/// with length 0 for the dummy verification. Its parameters must need at most the configured
/// max_memory_mib (a larger hash is refused before anything is allocated).
/// out_reason: receives BITSEC_PASSWORD_MATCH or BITSEC_PASSWORD_MISMATCH
/// (BITSEC_PASSWORD_MISMATCH is written first, so an error never reads as a match).
/// out_needs_rehash: optional; receives 1 when the password matched and the stored hash has
/// other parameters than the configuration (store bitsec_password_hash's result), else 0.
/// Returns BITSEC_OK (match or not); BITSEC_E_MALFORMED (the stored value is not a valid
/// scrypt PHC string); BITSEC_E_UNSUPPORTED (another scheme: verify it yourself, then
/// rehash); BITSEC_E_TOO_LARGE (password, hash, or parameters beyond max_memory_mib);
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// The derived hash is compared in constant time (CRYPTO_memcmp).
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_password_verify)
public func bitsec_password_verify(_ rt: OpaquePointer?, _ password: UnsafePointer<CChar>?, _ password_len: UInt,
                                   _ stored: UnsafePointer<CChar>?, _ stored_len: UInt,
                                   _ out_reason: UnsafeMutablePointer<Int32>?, _ out_needs_rehash: UnsafeMutablePointer<Int32>?) -> Int32 {
    store(out_reason, BitsecABI.BITSEC_PASSWORD_MISMATCH)
    store(out_needs_rehash, 0)
    return withRuntime(rt) { (r) throws(BitsecError) in
        let reason = try requiredOut(out_reason, "out_reason")
        let s = try r.require(r.passwords)
        let pw = try passwordArg(password, password_len)
        let st: UnsafeRawBufferPointer? = stored == nil && stored_len == 0
            ? nil : try boundedBytesArg(stored, stored_len, "stored", max: Int(BitsecABI.BITSEC_PASSWORD_MAX_HASH_BYTES))
        let d = try s.verify(pw, stored: st)
        store(out_needs_rehash, d.match && d.needsRehash ? 1 : 0)
        reason.pointee = d.match ? BitsecABI.BITSEC_PASSWORD_MATCH : BitsecABI.BITSEC_PASSWORD_MISMATCH
    }
}

/// Whether a stored hash should be replaced at the next successful login: 1 for anything
/// that is not a well-formed scrypt PHC string with exactly the configured parameters (older
/// parameters, another scheme the application still verifies itself, an unparsable value).
///
/// rt: an open runtime with a `passwords` section.
/// stored, stored_len: the stored value (any bytes; longer than BITSEC_PASSWORD_MAX_HASH_BYTES
/// is BITSEC_E_TOO_LARGE); caller-owned.
/// out_needs_rehash: receives 1 or 0 (1 is written first).
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CLOSED. No hashing: cheap.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_password_needs_rehash)
public func bitsec_password_needs_rehash(_ rt: OpaquePointer?, _ stored: UnsafePointer<CChar>?, _ stored_len: UInt,
                                         _ out_needs_rehash: UnsafeMutablePointer<Int32>?) -> Int32 {
    store(out_needs_rehash, 1)
    return withRuntime(rt) { (r) throws(BitsecError) in
        let out = try requiredOut(out_needs_rehash, "out_needs_rehash")
        let s = try r.require(r.passwords)
        let st = try boundedBytesArg(stored, stored_len, "stored", max: Int(BitsecABI.BITSEC_PASSWORD_MAX_HASH_BYTES))
        out.pointee = s.needsRehash(stored: st) ? 1 : 0
    }
}

/// Checks a new password against the policy (NIST SP 800-63B-4 section 3.1.1.2): minimum length
/// (min_length, 15 by default; min_length_mfa, 8, with BITSEC_PASSWORD_FLAG_MFA), maximum
/// length (max_length, 128), and the blocklist of common and breached passwords (built-in
/// list and blocklist_file; compared case-insensitively). No composition rules. Lengths are
/// Unicode code points of the UTF-8 text, never bytes.
///
/// rt: an open runtime with a `passwords` section.
/// password, password_len: as bitsec_password_hash (NFKC-normalised UTF-8: the length is
/// counted on what the caller passes).
/// flags: 0 or BITSEC_PASSWORD_FLAG_MFA; other bits are BITSEC_E_INVALID_ARGUMENT.
/// out_reasons: receives 0 (accepted) or the BITSEC_PASSWORD_POLICY_* bits that apply
/// (BITSEC_PASSWORD_POLICY_TOO_SHORT is written first, so an error never reads as accepted).
/// out_length: optional; receives the length in code points.
/// Returns BITSEC_OK (accepted or not); BITSEC_E_INVALID_ARGUMENT (NULL, not UTF-8, flags);
/// BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_password_check)
public func bitsec_password_check(_ rt: OpaquePointer?, _ password: UnsafePointer<CChar>?, _ password_len: UInt, _ flags: UInt32,
                                  _ out_reasons: UnsafeMutablePointer<UInt32>?, _ out_length: UnsafeMutablePointer<UInt>?) -> Int32 {
    store(out_reasons, BitsecABI.BITSEC_PASSWORD_POLICY_TOO_SHORT)
    store(out_length, 0)
    return withRuntime(rt) { (r) throws(BitsecError) in
        let out = try requiredOut(out_reasons, "out_reasons")
        let s = try r.require(r.passwords)
        guard flags & ~BitsecABI.BITSEC_PASSWORD_FLAG_MFA == 0 else { throw .invalid("flags: unknown bits") }
        let pw = try passwordArg(password, password_len)
        let d = s.check(pw, mfa: flags & BitsecABI.BITSEC_PASSWORD_FLAG_MFA != 0)
        store(out_length, UInt(d.length))
        out.pointee = d.reasons.rawValue
    }
}
