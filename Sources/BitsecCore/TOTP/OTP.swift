/// Stateless HOTP (RFC 4226) and TOTP (RFC 6238) with an explicit secret: computing codes and
/// checking them against a window, with no replay protection and no throttling (those need a
/// runtime: `TOTPService.verify`).
public enum OTP {
    /// Decodes a base32 secret and checks its size: at least `minBits` (80 by default for
    /// verification, see `OTPLimits`), at most `OTPLimits.maxSecretBytes`.
    /// The result is the caller's to wipe.
    public static func decodeSecret(_ text: UnsafeRawBufferPointer, minBits: Int = OTPLimits.minVerifySecretBits) throws(BitsecError) -> [UInt8] {
        guard text.count <= OTPLimits.maxSecretTextBytes else {
            throw .tooLarge("secret: \(text.count) bytes of base32 exceeds the limit of \(OTPLimits.maxSecretTextBytes)")
        }
        var key = try Base32.decode(text)
        guard key.count * 8 >= minBits else {
            let n = key.count * 8
            wipe(&key)
            throw .invalid("secret: \(n) bits is shorter than the minimum of \(minBits)")
        }
        return key
    }

    /// Runs `body` with the decoded secret, wiping it afterwards.
    public static func withSecret<R>(_ text: UnsafeRawBufferPointer, minBits: Int = OTPLimits.minVerifySecretBits,
                                     _ body: (UnsafeRawBufferPointer) throws(BitsecError) -> R) throws(BitsecError) -> R {
        var key = try decodeSecret(text, minBits: minBits)
        defer { wipe(&key) }
        return try key.withRawBytes(body)
    }

    /// The HOTP code of `counter`.
    public static func hotp(secret: UnsafeRawBufferPointer, counter: UInt64, algorithm: OTPAlgorithm, digits: Int) throws(BitsecError) -> [UInt8] {
        try withSecret(secret) { (key) throws(BitsecError) -> [UInt8] in
            let g = try OTPGenerator(key: key, algorithm: algorithm, digits: digits)
            return try g.code(counter: counter)
        }
    }

    /// The TOTP code at instant `at` (Unix seconds, already resolved).
    public static func totp(secret: UnsafeRawBufferPointer, params: OTPParameters, at: Int64) throws(BitsecError) -> [UInt8] {
        let step = try params.step(at: at)
        return try hotp(secret: secret, counter: UInt64(step), algorithm: params.algorithm, digits: params.digits)
    }

    /// Checks a TOTP code against steps `current - window ... current + window`.
    /// The current step is tried first and a match there returns at once (the time of a
    /// success only says that the code was the current one, which its acceptance says
    /// anyway); otherwise every other step of the window is computed and compared (no early
    /// exit), so the time of a refusal does not depend on the code. Comparisons are
    /// constant-time. When more than one other step matches (a collision), the one nearest
    /// the current step wins, the earlier on a tie.
    /// Returns `.ok` with the matched step, `.wrongCode`, or `.malformedCode`.
    public static func checkTOTP(key: UnsafeRawBufferPointer, code: UnsafeRawBufferPointer, params: OTPParameters,
                                 window: Int, at: Int64) throws(BitsecError) -> OTPDecision {
        guard window >= 0, window <= OTPLimits.maxWindow else { throw .invalid("window must be 0 to \(OTPLimits.maxWindow), not \(window)") }
        guard OTPGenerator.isWellFormed(code, digits: params.digits) else { return OTPDecision(.malformedCode) }
        let current = try params.step(at: at)
        let g = try OTPGenerator(key: key, algorithm: params.algorithm, digits: params.digits)
        if try g.matches(code, counter: UInt64(current)) { return OTPDecision(.ok, step: current) }
        guard window > 0 else { return OTPDecision(.wrongCode) }
        var best: Int64 = -1
        var bestDistance = Int.max
        for offset in -window...window where offset != 0 {
            let step = current + Int64(offset)
            guard step >= 0 else { continue }
            if try g.matches(code, counter: UInt64(step)) {
                let d = abs(offset)
                if d < bestDistance { bestDistance = d; best = step }
            }
        }
        return best >= 0 ? OTPDecision(.ok, step: best) : OTPDecision(.wrongCode)
    }

    /// Checks an HOTP code against counters `counter ... counter + lookAhead` (all computed);
    /// the lowest matching counter wins. The caller stores matched + 1 as its next counter.
    public static func checkHOTP(key: UnsafeRawBufferPointer, code: UnsafeRawBufferPointer, algorithm: OTPAlgorithm, digits: Int,
                                 counter: UInt64, lookAhead: Int) throws(BitsecError) -> OTPDecision {
        guard lookAhead >= 0, lookAhead <= 100 else { throw .invalid("look_ahead must be 0 to 100, not \(lookAhead)") }
        guard OTPGenerator.isWellFormed(code, digits: digits) else { return OTPDecision(.malformedCode) }
        guard counter <= UInt64(Int64.max) - 100 else { throw .invalid("counter is too large") }
        let g = try OTPGenerator(key: key, algorithm: algorithm, digits: digits)
        var found: Int64 = -1
        for i in 0...lookAhead {
            let c = counter + UInt64(i)
            if try g.matches(code, counter: c), found < 0 { found = Int64(c) }
        }
        return found >= 0 ? OTPDecision(.ok, step: found) : OTPDecision(.wrongCode)
    }

    /// A new secret of `bits` bits (128 to 512, a multiple of 8) from OpenSSL's RNG, base32
    /// without padding.
    public static func generateSecret(bits: Int = OTPLimits.defaultNewSecretBits) throws(BitsecError) -> [UInt8] {
        guard bits >= OTPLimits.minNewSecretBits, bits <= OTPLimits.maxNewSecretBits, bits % 8 == 0 else {
            throw .invalid("bits must be a multiple of 8 from \(OTPLimits.minNewSecretBits) to \(OTPLimits.maxNewSecretBits), not \(bits)")
        }
        var raw = try OpenSSL.randomBytes(count: bits / 8)
        defer { wipe(&raw) }
        return Base32.encode(raw)
    }
}
