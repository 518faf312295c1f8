/// The hash function of an HOTP/TOTP generator (RFC 6238 §1.2 allows SHA-1, SHA-256, SHA-512).
public enum OTPAlgorithm: Int32, Sendable, CaseIterable {
    case sha1 = 0
    case sha256 = 1
    case sha512 = 2

    /// The OpenSSL digest name and the name used in otpauth URIs.
    public var name: String {
        switch self {
        case .sha1: return "SHA1"
        case .sha256: return "SHA256"
        case .sha512: return "SHA512"
        }
    }

    public init?(name: String) {
        switch name.uppercased() {
        case "SHA1", "SHA-1": self = .sha1
        case "SHA256", "SHA-256": self = .sha256
        case "SHA512", "SHA-512": self = .sha512
        default: return nil
        }
    }

    public static func from(code: Int32) throws(BitsecError) -> OTPAlgorithm {
        guard let a = OTPAlgorithm(rawValue: code) else {
            throw .invalid("algorithm \(code) is not one of BITSEC_OTP_SHA1 (0), BITSEC_OTP_SHA256 (1), BITSEC_OTP_SHA512 (2)")
        }
        return a
    }
}

/// Limits shared by the core, the ABI and the header (`BITSEC_TOTP_*`).
public enum OTPLimits {
    public static let minDigits = 6
    public static let maxDigits = 8
    public static let maxWindow = 10
    public static let maxPeriod: Int64 = 86_400
    /// Decoded secret bytes accepted at most (an HMAC key longer than the block is hashed anyway).
    public static let maxSecretBytes = 128
    /// base32 text of a secret, padding included.
    public static let maxSecretTextBytes = 256
    /// Secrets generated for new enrolments: 128 bits at least (RFC 4226 §4 R6), 160 by default.
    public static let minNewSecretBits = 128
    public static let defaultNewSecretBits = 160
    public static let maxNewSecretBits = 512
    /// Existing secrets accepted for verification: 80 bits at least by default (the length of
    /// the 16-character secrets many deployments enrolled); `min_secret_bits` can raise it.
    public static let minVerifySecretBits = 80
    /// A code argument longer than this is refused as too large (shorter ones that are not
    /// exactly `digits` digits are the decision `malformed_code`).
    public static let maxCodeBytes = 256
    public static let maxUserBytes = 256
    /// Explicit instants: 1 .. 9999-12-31T23:59:59Z.
    public static let maxInstant: Int64 = 253_402_300_799
}

/// How codes are computed: algorithm, digits, and for TOTP the period and T0.
public struct OTPParameters: Sendable, Equatable {
    public var algorithm: OTPAlgorithm
    public var digits: Int
    public var period: Int64
    public var t0: Int64

    public init(algorithm: OTPAlgorithm = .sha1, digits: Int = 6, period: Int64 = 30, t0: Int64 = 0) {
        self.algorithm = algorithm
        self.digits = digits
        self.period = period
        self.t0 = t0
    }

    /// Checks the ranges (for values that come through the ABI).
    public static func checked(algorithm: Int32, digits: Int32, period: Int64 = 30, t0: Int64 = 0) throws(BitsecError) -> OTPParameters {
        let a = try OTPAlgorithm.from(code: algorithm)
        guard digits >= Int32(OTPLimits.minDigits), digits <= Int32(OTPLimits.maxDigits) else {
            throw .invalid("digits must be 6 to 8, not \(digits)")
        }
        guard period >= 1, period <= OTPLimits.maxPeriod else {
            throw .invalid("period must be 1 to \(OTPLimits.maxPeriod) seconds, not \(period)")
        }
        guard t0 >= 0, t0 <= OTPLimits.maxInstant else {
            throw .invalid("t0 must be 0 to \(OTPLimits.maxInstant), not \(t0)")
        }
        return OTPParameters(algorithm: a, digits: Int(digits), period: period, t0: t0)
    }

    /// The time step of an instant (Unix seconds): floor((at - T0) / period).
    public func step(at: Int64) throws(BitsecError) -> Int64 {
        guard at >= t0 else { throw .invalid("the instant \(at) is before t0 (\(t0))") }
        return (at - t0) / period
    }
}

/// Resolves an ABI instant: 0 means now; negative or beyond year 9999 is refused.
public func resolveInstant(_ at: Int64) throws(BitsecError) -> Int64 {
    guard at >= 0, at <= OTPLimits.maxInstant else {
        throw .invalid("at must be 0 (now) or a Unix time up to \(OTPLimits.maxInstant), not \(at)")
    }
    return Clock.resolve(at)
}
