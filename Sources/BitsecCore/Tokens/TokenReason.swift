/// Why a token was refused: stable codes (`BITSEC_TOKEN_*` in bitsec.h), never renumbered.
public enum TokenReason: Int32, Sendable, CaseIterable {
    case valid = 0
    /// Not three base64url segments, invalid base64url or JSON, a header that is not an object.
    case malformed = 1
    /// Longer than `max_token_bytes` (checked before any decoding).
    case tooLarge = 2
    /// `alg` is not one bitsec supports (`none` in any letter case is never supported).
    case unsupportedAlg = 3
    /// The header's `alg` differs from the algorithm its key is pinned to.
    case algMismatch = 4
    /// No key has the token's `kid`, or no `kid` and not exactly one key could apply.
    case unknownKid = 5
    case badSignature = 6
    case expired = 7
    case notYetValid = 8
    case issuedInFuture = 9
    case wrongIssuer = 10
    case wrongAudience = 11
    case missingClaim = 12
    /// A claim of the wrong JSON type (an `exp` that is a string, ...).
    case invalidClaim = 13
    case revoked = 14
    /// A `crit` header names an extension bitsec does not understand.
    case critUnsupported = 15
    /// The `typ` header is not the configured one, or a refresh token was presented as an
    /// access token (or the reverse).
    case wrongType = 16
    /// The header has no `kid` and `require_kid` is true (refused even when only one key
    /// could apply).
    case missingKid = 17

    public var name: StaticString {
        switch self {
        case .valid: return "valid"
        case .malformed: return "malformed"
        case .tooLarge: return "too_large"
        case .unsupportedAlg: return "unsupported_alg"
        case .algMismatch: return "alg_mismatch"
        case .unknownKid: return "unknown_kid"
        case .badSignature: return "bad_signature"
        case .expired: return "expired"
        case .notYetValid: return "not_yet_valid"
        case .issuedInFuture: return "issued_in_future"
        case .wrongIssuer: return "wrong_issuer"
        case .wrongAudience: return "wrong_audience"
        case .missingClaim: return "missing_claim"
        case .invalidClaim: return "invalid_claim"
        case .revoked: return "revoked"
        case .critUnsupported: return "crit_unsupported"
        case .wrongType: return "wrong_type"
        case .missingKid: return "missing_kid"
        }
    }

    public var text: String { name.description }
}
