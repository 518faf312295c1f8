/// Why a code was accepted or refused (`BITSEC_TOTP_*` in the header). A refusal is a
/// decision, not an error.
public enum OTPReason: Int32, Sendable, CaseIterable {
    case ok = 0
    /// Well-formed, but not the code of any step in the window (or of any stored backup code).
    case wrongCode = 1
    /// The code is right, but its step (or backup code) was already accepted for this user.
    case replayed = 2
    /// Too many failed attempts for this user: refused without looking at the code.
    case throttled = 3
    /// Not exactly `digits` ASCII digits (or not a backup code's shape).
    case malformedCode = 4

    public var name: String {
        switch self {
        case .ok: return "ok"
        case .wrongCode: return "wrong_code"
        case .replayed: return "replayed"
        case .throttled: return "throttled"
        case .malformedCode: return "malformed_code"
        }
    }
}

/// The outcome of a verification.
public struct OTPDecision: Sendable, Equatable {
    public var reason: OTPReason
    /// The matched time step (TOTP) or counter (HOTP), or backup code index; -1 when none.
    public var step: Int64
    /// Seconds until the user may try again (throttled only), else 0.
    public var retryAfter: Int64

    public init(_ reason: OTPReason, step: Int64 = -1, retryAfter: Int64 = 0) {
        self.reason = reason
        self.step = step
        self.retryAfter = retryAfter
    }

    public var accepted: Bool { reason == .ok }
}
