// MFA: HOTP/TOTP codes, stateful TOTP verification (replay protection, throttling), backup
// codes and provisioning URIs. Decoding and encoding only; the decisions are BitsecCore's.
internal import BitsecCore

/// The body of the stateful decisions (bitsec_totp_verify, bitsec_totp_verify_sealed,
/// bitsec_backup_code_verify): the outputs are set first (WRONG_CODE, position -1, no wait),
/// then from the decision `decide` makes with the runtime's TOTP service.
private func otpDecision(_ rt: OpaquePointer?, _ out_reason: UnsafeMutablePointer<Int32>?, _ out_retry_after: UnsafeMutablePointer<Int64>?,
                         timed op: TimedOperation = .totpVerify,
                         position: (Int64) -> Void, _ decide: (TOTPService) throws(BitsecError) -> OTPDecision) -> Int32 {
    store(out_reason, OTPReason.wrongCode.rawValue)
    position(-1)
    store(out_retry_after, 0)
    return withRuntime(rt, timed: op) { (r) throws(BitsecError) in
        let reason = try requiredOut(out_reason, "out_reason")
        let d = try decide(try r.require(r.totp))
        position(d.step)
        store(out_retry_after, d.retryAfter)
        reason.pointee = d.reason.rawValue
    }
}

/// Generates a new TOTP/HOTP secret from OpenSSL's RNG, as upper-case RFC 4648 base32
/// without padding (what authenticator apps and otpauth URIs use).
///
/// bits: the secret's size, a multiple of 8 from BITSEC_TOTP_MIN_NEW_SECRET_BITS (128) to
/// BITSEC_TOTP_MAX_NEW_SECRET_BITS (512); 0 means BITSEC_TOTP_DEFAULT_SECRET_BITS (160).
/// out_buf, out_cap: caller-owned buffer (104 bytes hold any secret, NUL included).
/// out_len: receives the text's length (a NUL follows when there is room), also when the
/// buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT (bits out of range, out_len NULL);
/// BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_CRYPTO.
/// The secret is the user's second factor: store it encrypted (bitsec_encrypt_field) and
/// wipe the buffer once it is stored and shown.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.1.0
@c(bitsec_totp_secret_generate)
public func bitsec_totp_secret_generate(_ bits: Int32, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        var s = try OTP.generateSecret(bits: bits == 0 ? OTPLimits.defaultNewSecretBits : Int(bits))
        defer { wipe(&s) }
        try writeOutput(s, out_buf, out_cap, out_len)
    }
}

/// Computes the RFC 4226 HOTP code of a counter.
///
/// secret, secret_len: the base32 secret (case-insensitive, padding optional, at most
/// BITSEC_TOTP_MAX_SECRET_TEXT_BYTES, at least 80 bits decoded); caller-owned.
/// algorithm: BITSEC_OTP_SHA1, BITSEC_OTP_SHA256 or BITSEC_OTP_SHA512.
/// digits: 6 to 8. counter: the moving factor.
/// out_buf, out_cap, out_len: receives `digits` ASCII digits (leading zeros kept), then a NUL
/// when there is room.
/// Returns BITSEC_OK; BITSEC_E_MALFORMED (the secret is not base32; the detail never quotes
/// it); BITSEC_E_INVALID_ARGUMENT (secret too short, parameter out of range, NULL);
/// BITSEC_E_TOO_LARGE; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_CRYPTO.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.1.0
@c(bitsec_hotp_code)
public func bitsec_hotp_code(_ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ algorithm: Int32, _ digits: Int32, _ counter: UInt64,
                             _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        let p = try OTPParameters.checked(algorithm: algorithm, digits: digits)
        let code = try OTP.hotp(secret: try secretArg(secret, secret_len), counter: counter, algorithm: p.algorithm, digits: p.digits)
        try writeOutput(code, out_buf, out_cap, out_len)
    }
}

/// Checks an RFC 4226 HOTP code against counters counter .. counter + look_ahead (stateless:
/// the caller stores *out_counter + 1 as the next counter after a success, which is what
/// prevents replay).
///
/// secret, secret_len: as bitsec_hotp_code. code, code_len: the code as typed (at most
/// BITSEC_TOTP_MAX_CODE_BYTES); anything but exactly `digits` ASCII digits is the decision
/// BITSEC_TOTP_MALFORMED_CODE. algorithm, digits: as bitsec_hotp_code.
/// look_ahead: 0 to 100 further counters to try (resynchronisation).
/// out_reason: receives BITSEC_TOTP_OK or BITSEC_TOTP_WRONG_CODE / BITSEC_TOTP_MALFORMED_CODE
/// (set to BITSEC_TOTP_WRONG_CODE first, so an error never reads as acceptance).
/// out_counter: optional; receives the matched counter (the lowest one).
/// Returns BITSEC_OK (whatever the decision); BITSEC_E_MALFORMED (secret); BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_TOO_LARGE; BITSEC_E_CRYPTO. Codes are compared in constant time.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.1.0
@c(bitsec_hotp_check)
public func bitsec_hotp_check(_ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ code: UnsafePointer<CChar>?, _ code_len: UInt,
                              _ algorithm: Int32, _ digits: Int32, _ counter: UInt64, _ look_ahead: Int32,
                              _ out_reason: UnsafeMutablePointer<Int32>?, _ out_counter: UnsafeMutablePointer<UInt64>?) -> Int32 {
    store(out_reason, OTPReason.wrongCode.rawValue)
    return abiCall { () throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let p = try OTPParameters.checked(algorithm: algorithm, digits: digits)
        let ahead = try int32Arg(look_ahead, "look_ahead", 0...100)
        let c = try codeArg(code, code_len)
        let d = try OTP.withSecret(try secretArg(secret, secret_len)) { (key) throws(BitsecError) -> OTPDecision in
            try OTP.checkHOTP(key: key, code: c, algorithm: p.algorithm, digits: p.digits, counter: counter, lookAhead: ahead)
        }
        if d.accepted { store(out_counter, UInt64(d.step)) }
        out_reason.pointee = d.reason.rawValue
    }
}

/// Computes the RFC 6238 TOTP code at an instant, with explicit parameters.
///
/// secret, secret_len: as bitsec_hotp_code. algorithm, digits: as bitsec_hotp_code.
/// period: 1 to 86400 seconds (30 is standard). t0: the Unix time steps count from (0).
/// at: Unix seconds, 0 = now (up to year 9999, not before t0).
/// out_buf, out_cap, out_len: receives the `digits` ASCII digits.
/// Returns as bitsec_hotp_code.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.1.0
@c(bitsec_totp_code)
public func bitsec_totp_code(_ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ algorithm: Int32, _ digits: Int32, _ period: Int64, _ t0: Int64,
                             _ at: Int64, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        let p = try OTPParameters.checked(algorithm: algorithm, digits: digits, period: period, t0: t0)
        let code = try OTP.totp(secret: try secretArg(secret, secret_len), params: p, at: try resolveInstant(at))
        try writeOutput(code, out_buf, out_cap, out_len)
    }
}

/// Checks a TOTP code against the steps within `window` of the step at `at`, with explicit
/// parameters and NO replay protection or throttling (that is bitsec_totp_verify, which
/// needs a runtime): for tools, tests and callers that keep their own state.
///
/// secret, secret_len, algorithm, digits, period, t0, at: as bitsec_totp_code.
/// code, code_len: as bitsec_hotp_check. window: 0 to BITSEC_TOTP_MAX_WINDOW steps before
/// and after. Every step of the window is computed and compared in constant time.
/// out_reason: receives BITSEC_TOTP_OK, BITSEC_TOTP_WRONG_CODE or BITSEC_TOTP_MALFORMED_CODE
/// (BITSEC_TOTP_WRONG_CODE is written first, so an error never reads as acceptance).
/// out_step: optional; receives the matched time step (-1 when none).
/// Returns BITSEC_OK (whatever the decision); BITSEC_E_MALFORMED (secret);
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_CRYPTO.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.1.0
@c(bitsec_totp_check)
public func bitsec_totp_check(_ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ code: UnsafePointer<CChar>?, _ code_len: UInt,
                              _ algorithm: Int32, _ digits: Int32, _ period: Int64, _ t0: Int64, _ window: Int32, _ at: Int64,
                              _ out_reason: UnsafeMutablePointer<Int32>?, _ out_step: UnsafeMutablePointer<Int64>?) -> Int32 {
    store(out_reason, OTPReason.wrongCode.rawValue)
    store(out_step, -1)
    return abiCall { () throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let p = try OTPParameters.checked(algorithm: algorithm, digits: digits, period: period, t0: t0)
        let w = try int32Arg(window, "window", 0...Int32(OTPLimits.maxWindow))
        let c = try codeArg(code, code_len)
        let instant = try resolveInstant(at)
        let d = try OTP.withSecret(try secretArg(secret, secret_len)) { (key) throws(BitsecError) -> OTPDecision in
            try OTP.checkTOTP(key: key, code: c, params: p, window: w, at: instant)
        }
        store(out_step, d.step)
        out_reason.pointee = d.reason.rawValue
    }
}

/// Builds a provisioning URI in the Google Authenticator key-URI format, with explicit
/// parameters: `otpauth://totp/Issuer:account?secret=...&issuer=...&algorithm=...&digits=...&period=...`,
/// issuer and account percent-encoded (UTF-8, RFC 3986; a space is %20).
///
/// secret, secret_len: as bitsec_hotp_code (written back normalised: upper case, no padding).
/// account, account_len: UTF-8, 1 to 256 bytes, no ':' and no control characters.
/// issuer, issuer_len: UTF-8, same rules; NULL or length 0 for none (then the label is the
/// account alone and no issuer parameter is written).
/// algorithm, digits, period: as bitsec_totp_code.
/// out_buf, out_cap, out_len: receives the URI (2048 bytes are always enough).
/// Returns BITSEC_OK; BITSEC_E_MALFORMED (secret); BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BUFFER_TOO_SMALL.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.1.0
@c(bitsec_totp_uri)
public func bitsec_totp_uri(_ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ account: UnsafePointer<CChar>?, _ account_len: UInt,
                            _ issuer: UnsafePointer<CChar>?, _ issuer_len: UInt, _ algorithm: Int32, _ digits: Int32, _ period: Int64,
                            _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        let p = try OTPParameters.checked(algorithm: algorithm, digits: digits, period: period)
        let a = try textArg(account, account_len, "account", max: 256)
        let i: String? = issuer_len == 0 ? nil : try textArg(issuer, issuer_len, "issuer", max: 256)
        let uri = try ProvisioningURI.make(secret: try secretArg(secret, secret_len), account: a, issuer: i, params: p)
        try writeOutput(uri, out_buf, out_cap, out_len)
    }
}

/// Verifies a TOTP code for a user with the runtime's `totp` parameters, refusing replays
/// and throttling failures (RFC 6238 section 5.2):
/// (1) not exactly `digits` ASCII digits: BITSEC_TOTP_MALFORMED_CODE (not counted as a failure);
/// (2) the user has too many recent failures: BITSEC_TOTP_THROTTLED, *out_retry_after set, the
///     code is not even looked at;
/// (3) no step of the window matches: BITSEC_TOTP_WRONG_CODE (counted);
/// (4) the matched step is not later than the last step accepted for the user:
///   BITSEC_TOTP_REPLAYED (counted);
/// (5) else BITSEC_TOTP_OK: the step is recorded (atomically: in process, or through Redis when
///   `totp.state` is `redis`, so two runtimes cannot both accept one code) and the user's
///   failures are reset.
///
/// rt: the runtime (needs a `totp` section).
/// secret, secret_len: the user's base32 secret (at least `min_secret_bits`, 80 by default).
/// code, code_len: the code as typed (at most BITSEC_TOTP_MAX_CODE_BYTES).
/// user, user_len: UTF-8 user identifier, at most BITSEC_TOTP_MAX_USER_BYTES; NULL or length
/// 0 keys the replay and throttle state by a SHA-256 hash of the secret instead.
/// at: Unix seconds, 0 = now.
/// out_reason: receives a BITSEC_TOTP_* reason (BITSEC_TOTP_WRONG_CODE is written first).
/// out_step: optional; the matched time step, -1 when none.
/// out_retry_after: optional; seconds to wait when throttled, else 0.
/// Returns BITSEC_OK (whatever the decision); BITSEC_E_NOT_CONFIGURED; BITSEC_E_MALFORMED
/// (secret not base32); BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE (Redis state configured and unreachable: nothing was
/// accepted); BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; concurrent verifications of one code for one user
/// accept it at most once.
/// Since: 0.1.0
@c(bitsec_totp_verify)
public func bitsec_totp_verify(_ rt: OpaquePointer?, _ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ code: UnsafePointer<CChar>?, _ code_len: UInt,
                               _ user: UnsafePointer<CChar>?, _ user_len: UInt, _ at: Int64, _ out_reason: UnsafeMutablePointer<Int32>?,
                               _ out_step: UnsafeMutablePointer<Int64>?, _ out_retry_after: UnsafeMutablePointer<Int64>?) -> Int32 {
    otpDecision(rt, out_reason, out_retry_after, position: { store(out_step, $0) }) { (totp) throws(BitsecError) in
        let s = try secretArg(secret, secret_len)
        let c = try codeArg(code, code_len)
        let u = try userArg(user, user_len)
        return try totp.verify(secret: s, code: c, user: u, at: try resolveInstant(at))
    }
}

/// The current TOTP code of a secret with the runtime's `totp` parameters (for enrolment
/// checks and tests; never send it to the user's channel).
///
/// rt: the runtime (needs a `totp` section). secret, secret_len: as bitsec_totp_verify.
/// at: Unix seconds, 0 = now. out_buf, out_cap, out_len: receives the digits.
/// Returns BITSEC_OK; BITSEC_E_NOT_CONFIGURED; BITSEC_E_MALFORMED; BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_TOO_LARGE; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_totp_now)
public func bitsec_totp_now(_ rt: OpaquePointer?, _ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ at: Int64,
                            _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let totp = try r.require(r.totp)
        let code = try totp.now(secret: try secretArg(secret, secret_len), at: try resolveInstant(at))
        try writeOutput(code, out_buf, out_cap, out_len)
    }
}

/// A provisioning URI with the runtime's `totp` parameters and `issuer` (see bitsec_totp_uri).
///
/// rt: the runtime (needs a `totp` section). secret, secret_len: the base32 secret.
/// account, account_len: UTF-8, 1 to 256 bytes, no ':'.
/// out_buf, out_cap, out_len: receives the URI (2048 bytes are always enough).
/// Returns BITSEC_OK; BITSEC_E_NOT_CONFIGURED; BITSEC_E_MALFORMED; BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_TOO_LARGE; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_totp_provisioning_uri)
public func bitsec_totp_provisioning_uri(_ rt: OpaquePointer?, _ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ account: UnsafePointer<CChar>?,
                                         _ account_len: UInt, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                         _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let totp = try r.require(r.totp)
        let a = try textArg(account, account_len, "account", max: 256)
        let uri = try totp.provisioningURI(secret: try secretArg(secret, secret_len), account: a)
        try writeOutput(uri, out_buf, out_cap, out_len)
    }
}

/// Generates single-use backup (recovery) codes with the runtime's `totp.backup_codes`
/// settings. The output is one line per code: the code, a TAB, its hash, a newline. Show the codes to the user
/// once, store the hashes (ASCII, no tab or newline) and never the codes.
///
/// rt: the runtime (needs a `totp` section).
/// count: how many codes, 1 to BITSEC_TOTP_MAX_BACKUP_CODES; 0 means the configured count.
/// out_buf, out_cap, out_len: receives the lines (count * 128 bytes are always enough).
/// Wipe the buffer once the codes are shown.
/// Returns BITSEC_OK; BITSEC_E_NOT_CONFIGURED; BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_BUFFER_TOO_SMALL (nothing is kept: call again with a larger buffer and new codes
/// are made); BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0 (named bitsec_backup_codes_generate before 0.2.0)
@c(bitsec_backup_code_generate)
public func bitsec_backup_code_generate(_ rt: OpaquePointer?, _ count: Int32, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                         _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let totp = try r.require(r.totp)
        let n = try int32Arg(count, "count", 0...Int32(BackupCodes.maxCount))
        let batch = try totp.generateBackupCodes(count: n == 0 ? nil : n)
        var text: [UInt8] = []
        for (c, h) in zip(batch.codes, batch.hashes) { text += Array("\(c)\t\(h)\n".utf8) }
        defer { wipe(&text) }
        try writeOutput(text, out_buf, out_cap, out_len)
    }
}

/// Verifies a backup code against the caller's stored hashes and consumes it: on
/// BITSEC_TOTP_OK, *out_index is the position of the matched hash, which the caller must
/// delete. The code is claimed first (in process, or through Redis when `totp.state` is
/// `redis`, for `used_ttl_s`), so concurrent uses of one code succeed at most once even
/// before the caller has deleted it; a claimed code answers BITSEC_TOTP_REPLAYED.
/// Failures count towards the same per-user throttle as TOTP codes.
///
/// rt: the runtime (needs a `totp` section).
/// user, user_len: UTF-8 user identifier, 1 to BITSEC_TOTP_MAX_USER_BYTES (required).
/// code, code_len: the code as typed (case, spaces and hyphens ignored; at most
/// BITSEC_TOTP_MAX_CODE_BYTES); one that cannot be a backup code is BITSEC_TOTP_MALFORMED_CODE.
/// stored, stored_len: the user's stored hashes, separated by '\n' (no trailing newline), at
/// most BITSEC_TOTP_MAX_BACKUP_CODES of them; length 0 for none left (every code is then
/// BITSEC_TOTP_WRONG_CODE).
/// at: Unix seconds for the throttle, 0 = now.
/// out_reason: receives a BITSEC_TOTP_* reason (BITSEC_TOTP_WRONG_CODE is written first).
/// out_index: optional; the matched hash's index (also for REPLAYED), -1 when none.
/// out_retry_after: optional; seconds to wait when throttled, else 0.
/// Returns BITSEC_OK (whatever the decision); BITSEC_E_NOT_CONFIGURED; BITSEC_E_MALFORMED (a
/// stored hash is not one bitsec made); BITSEC_E_CONFIG (a hash needs the pepper and none is
/// configured); BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_BACKEND_UNAVAILABLE;
/// BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_backup_code_verify)
public func bitsec_backup_code_verify(_ rt: OpaquePointer?, _ user: UnsafePointer<CChar>?, _ user_len: UInt, _ code: UnsafePointer<CChar>?, _ code_len: UInt,
                                      _ stored: UnsafePointer<CChar>?, _ stored_len: UInt, _ at: Int64, _ out_reason: UnsafeMutablePointer<Int32>?,
                                      _ out_index: UnsafeMutablePointer<Int32>?, _ out_retry_after: UnsafeMutablePointer<Int64>?) -> Int32 {
    otpDecision(rt, out_reason, out_retry_after, timed: .backupCodeVerify, position: { store(out_index, Int32(truncatingIfNeeded: $0)) }) { (totp) throws(BitsecError) in
        let u = try userArg(user, user_len, required: true) ?? ""
        let c = try codeArg(code, code_len)
        let s = try textArg(stored, stored_len, "stored", max: 64 * 1024)
        return try totp.verifyBackupCode(c, stored: s, user: u, at: try resolveInstant(at))
    }
}

/// Seals a user's TOTP secret for storage: checks it as bitsec_totp_verify would (base32, at
/// least `min_secret_bits`), normalises it (upper case, no padding) and encrypts it with the
/// runtime's `fields` capability (primary key, randomised AES-256-GCM, text form) under the
/// context `bitsec.totp.secret|<user>`. Store the output instead of the secret and pass it to
/// bitsec_totp_verify_sealed; bitsec_decrypt_field with the same context gives the base32
/// secret back (to show the QR code again), and bitsec_field_rewrap rotates it.
///
/// rt: the runtime (needs `totp` and `fields` sections).
/// secret, secret_len: the base32 secret (at most BITSEC_TOTP_MAX_SECRET_TEXT_BYTES).
/// user, user_len: UTF-8 user identifier, 1 to BITSEC_TOTP_MAX_USER_BYTES (required: it binds
/// the sealed secret to the user).
/// out_buf, out_cap, out_len: receives the sealed secret, ASCII (base64url), at most
/// BITSEC_TOTP_MAX_SEALED_SECRET_BYTES; a NUL follows when there is room. Secret material:
/// wipe any copy of the plaintext secret once sealed and shown.
/// Returns BITSEC_OK; BITSEC_E_NOT_CONFIGURED (no `totp` or no `fields` section);
/// BITSEC_E_MALFORMED (secret not base32); BITSEC_E_INVALID_ARGUMENT (secret too short, user
/// missing or not UTF-8, NULL); BITSEC_E_TOO_LARGE; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_CRYPTO;
/// BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_totp_secret_seal)
public func bitsec_totp_secret_seal(_ rt: OpaquePointer?, _ secret: UnsafePointer<CChar>?, _ secret_len: UInt, _ user: UnsafePointer<CChar>?,
                                    _ user_len: UInt, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                    _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let totp = try r.require(r.totp)
        let s = try secretArg(secret, secret_len)
        let u = try userArg(user, user_len, required: true) ?? ""
        let sealed = try totp.sealSecret(s, user: u)
        try writeOutput(sealed, out_buf, out_cap, out_len)
    }
}

/// bitsec_totp_verify with a sealed secret (from bitsec_totp_secret_seal): the secret is
/// opened inside the library for `user`, verified exactly as bitsec_totp_verify does (the
/// same checks in the same order, the same replay and throttle state for the user, the same
/// audit events) and wiped. A code that is not exactly `digits` digits is decided
/// (BITSEC_TOTP_MALFORMED_CODE) before anything is opened.
///
/// A sealed secret that does not open is an error, never a decision, and not counted as a
/// failed attempt: it is the caller's stored data that is wrong, not the user's code.
///
/// rt: the runtime (needs `totp` and `fields` sections).
/// sealed, sealed_len: the stored sealed secret (at most BITSEC_TOTP_MAX_SEALED_SECRET_BYTES).
/// code, code_len, at, out_reason, out_step, out_retry_after: as bitsec_totp_verify.
/// user, user_len: UTF-8 user identifier, 1 to BITSEC_TOTP_MAX_USER_BYTES (required: the
/// user the secret was sealed for).
/// Returns BITSEC_OK (whatever the decision); BITSEC_E_NOT_CONFIGURED (no `totp` or no
/// `fields` section); BITSEC_E_MALFORMED (not a sealed secret, altered, or sealed for another
/// user: the detail says which, e.g. `wrong_context`); BITSEC_E_CONFIG (its key is unknown to
/// or retired in the `fields` keyring); BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE (nothing was accepted); BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; concurrent verifications of one code for one user
/// accept it at most once.
/// Since: 0.1.0
@c(bitsec_totp_verify_sealed)
public func bitsec_totp_verify_sealed(_ rt: OpaquePointer?, _ sealed: UnsafePointer<CChar>?, _ sealed_len: UInt, _ code: UnsafePointer<CChar>?,
                                      _ code_len: UInt, _ user: UnsafePointer<CChar>?, _ user_len: UInt, _ at: Int64,
                                      _ out_reason: UnsafeMutablePointer<Int32>?, _ out_step: UnsafeMutablePointer<Int64>?,
                                      _ out_retry_after: UnsafeMutablePointer<Int64>?) -> Int32 {
    otpDecision(rt, out_reason, out_retry_after, position: { store(out_step, $0) }) { (totp) throws(BitsecError) in
        let s = try sealedArg(sealed, sealed_len)
        let c = try codeArg(code, code_len)
        let u = try userArg(user, user_len, required: true) ?? ""
        return try totp.verifySealed(sealed: s, code: c, user: u, at: try resolveInstant(at))
    }
}
