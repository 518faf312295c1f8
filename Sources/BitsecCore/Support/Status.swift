/// Stable status codes of the C ABI. Never renumbered; new codes are appended.
///
/// Decisions (an invalid token, a denied permission, a rate-limited key, a wrong TOTP code)
/// are not errors: they are `ok` calls that write a decision. Errors mean "could not decide".
public enum Status: Int32, Sendable, CaseIterable {
    case ok = 0
    /// A required pointer was NULL, a length was out of range, text was not valid UTF-8.
    case invalidArgument = 1
    /// The configuration document is invalid; the detail names the offending field.
    case config = 2
    /// The operation's configuration section is absent.
    case notConfigured = 3
    /// The output buffer is too small; `*out_len` holds the size needed.
    case bufferTooSmall = 4
    /// A backend (Redis) is down, refused, or did not answer within its timeout.
    case backendUnavailable = 5
    /// OpenSSL reported a failure.
    case crypto = 6
    /// The handle was closed.
    case closed = 7
    /// An input exceeds a documented size limit.
    case tooLarge = 8
    /// An input could not be parsed (JSON, base64, PEM, ...).
    case malformed = 9
    /// A file could not be read or written.
    case io = 10
    /// A bounded wait ran out (for example a full queue under the block policy).
    case timeout = 11
    /// A bug in bitsec: please report it.
    case internalError = 12
    /// The request is well-formed but not supported (algorithm, option, version).
    case unsupported = 13
    /// A named thing (key id, category, user) does not exist.
    case notFound = 14

    /// The static, handle-free description (`bitsec_strerror`).
    public var message: StaticString {
        switch self {
        case .ok: return "ok"
        case .invalidArgument: return "invalid argument"
        case .config: return "invalid configuration"
        case .notConfigured: return "not configured"
        case .bufferTooSmall: return "output buffer too small"
        case .backendUnavailable: return "backend unavailable"
        case .crypto: return "cryptographic library failure"
        case .closed: return "handle is closed"
        case .tooLarge: return "input too large"
        case .malformed: return "malformed input"
        case .io: return "i/o error"
        case .timeout: return "timed out"
        case .internalError: return "internal error"
        case .unsupported: return "unsupported"
        case .notFound: return "not found"
        }
    }
}

/// The one error type of the core. `detail` is shown to callers: it must never contain key
/// material, token contents or plaintext. Name fields, sizes, limits; never values.
public struct BitsecError: Error, Sendable, CustomStringConvertible {
    public let status: Status
    public let detail: String

    public init(_ status: Status, _ detail: String) {
        self.status = status
        self.detail = detail
    }

    public var description: String { "\(status.message): \(detail)" }

    public static func invalid(_ detail: String) -> BitsecError { .init(.invalidArgument, detail) }
    public static func config(_ detail: String) -> BitsecError { .init(.config, detail) }
    public static func malformed(_ detail: String) -> BitsecError { .init(.malformed, detail) }
    public static func tooLarge(_ detail: String) -> BitsecError { .init(.tooLarge, detail) }
    public static func crypto(_ detail: String) -> BitsecError { .init(.crypto, detail) }
    public static func backend(_ detail: String) -> BitsecError { .init(.backendUnavailable, detail) }
    public static func internalError(_ detail: String) -> BitsecError { .init(.internalError, detail) }
}
