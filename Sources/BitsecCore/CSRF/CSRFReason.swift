/// Why a CSRF check refused a request: stable codes (`BITSEC_CSRF_*` in bitsec.h), never
/// renumbered. A refusal is a decision (`BITSEC_OK` with the reason), not an error.
public enum CSRFReason: Int32, Sendable, CaseIterable {
    case valid = 0
    /// No token was presented (empty).
    case missing = 1
    /// Not a bitsec CSRF token: wrong length, invalid base64url, unknown version.
    case malformed = 2
    /// The MAC does not verify under any configured key for this session binding (forged,
    /// another session's token, or a token of the other kind).
    case invalid = 3
    /// Older than `max_age_s`, or issued too far in the future.
    case expired = 4
    /// Double-submit: the cookie's token and the submitted token differ.
    case mismatch = 5
    /// The `Origin` of an unsafe request is not in `allowed_origins` (or is `null`).
    case originNotAllowed = 6
    /// An unsafe request with neither `Origin` nor `Sec-Fetch-Site`, refused by
    /// `missing_origin: "refuse"` (the default).
    case originMissing = 7
    /// `Sec-Fetch-Site` is `cross-site` or `same-site` and no allowed `Origin` vouches for it.
    case crossSite = 8

    public var name: StaticString {
        switch self {
        case .valid: return "valid"
        case .missing: return "csrf_token_missing"
        case .malformed: return "csrf_token_malformed"
        case .invalid: return "csrf_token_invalid"
        case .expired: return "csrf_token_expired"
        case .mismatch: return "csrf_token_mismatch"
        case .originNotAllowed: return "origin_not_allowed"
        case .originMissing: return "origin_missing"
        case .crossSite: return "cross_site_request"
        }
    }

    public var text: String { name.description }
}
