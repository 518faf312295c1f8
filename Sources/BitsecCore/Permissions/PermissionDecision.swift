/// Why a permission was granted or denied. Raw values are the C ABI's
/// `BITSEC_PERM_*` reason codes: stable, never renumbered.
public enum PermissionReason: UInt8, Sendable, CaseIterable {
    case granted = 1
    case noGrant = 2
    case deniedByRule = 3
    case ownerOnly = 4
    case department = 5
    case tenantMismatch = 6
    case scopeMissing = 7
    case unknownResource = 8
    case unknownAction = 9

    /// The reason's stable text: what a 403 detail and an audit event carry.
    public var text: StaticString {
        switch self {
        case .granted: return "granted"
        case .noGrant: return "no_grant"
        case .deniedByRule: return "denied_by_rule"
        case .ownerOnly: return "condition_failed:owner_only"
        case .department: return "condition_failed:department"
        case .tenantMismatch: return "tenant_mismatch"
        case .scopeMissing: return "scope_missing"
        case .unknownResource: return "unknown_resource"
        case .unknownAction: return "unknown_action"
        }
    }
}

/// One decision, packed into 64 bits for the C ABI:
/// bit 0 allowed; bits 8-15 the reason; bits 16-31 the policy generation (mod 65536);
/// bits 32-63 the deciding rule's index + 1 (0: no rule decided).
public struct PermissionDecision: Sendable, Equatable {
    public let raw: UInt64

    @inline(__always)
    public init(raw: UInt64) { self.raw = raw }

    @inline(__always)
    init(_ reason: PermissionReason, rule: Int32, generation: UInt64) {
        var r = UInt64(reason.rawValue) << 8 | (generation & 0xFFFF) << 16
        if reason == .granted { r |= 1 }
        if rule >= 0 { r |= UInt64(UInt32(rule) &+ 1) << 32 }
        raw = r
    }

    public var allowed: Bool { raw & 1 == 1 }
    public var reason: PermissionReason { PermissionReason(rawValue: UInt8(truncatingIfNeeded: raw >> 8)) ?? .noGrant }
    /// The deciding rule's index in its policy, or -1.
    public var rule: Int { Int(raw >> 32) - 1 }
    public var generation: UInt64 { (raw >> 16) & 0xFFFF }
}
