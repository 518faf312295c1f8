/// How capabilities emit automatic audit events (token failures, permission denials,
/// rate-limit denials and blocks, TOTP failures and replays, key and policy reloads).
/// The audit capability implements it; a capability holds `(any AuditHook)?` from its
/// `CapabilityContext` and does nothing when it is nil.
public protocol AuditHook: Sendable {
    /// False when automatic events are disabled: check it before building an event.
    var automaticEventsEnabled: Bool { get }
    /// Enqueues an event; never blocks the caller on I/O and never throws.
    func emitAutomatic(_ event: AutomaticAuditEvent)
}

/// An event a capability reports about its own decisions.
public struct AutomaticAuditEvent: Sendable {
    /// `authentication`, `authorization`, `rate_limit`, `mfa`, `key_management`, ...
    public var type: String
    /// `token_rejected`, `permission_denied`, `rate_limited`, `blocked`, `totp_failed`,
    /// `totp_replayed`, `keys_reloaded`, `policy_reloaded`, ...
    public var subtype: String
    /// `success`, `failure` or `denied`.
    public var result: String
    /// The stable reason code of the decision (`expired`, `no_grant`, ...).
    public var reason: String?
    public var actor: String?
    public var tenant: String?
    public var resource: String?
    public var action: String?
    /// Extra members (never secrets, never token contents).
    public var details: [(key: String, value: JSONValue)]

    public init(type: String, subtype: String, result: String, reason: String? = nil, actor: String? = nil,
                tenant: String? = nil, resource: String? = nil, action: String? = nil,
                details: [(key: String, value: JSONValue)] = []) {
        self.type = type
        self.subtype = subtype
        self.result = result
        self.reason = reason
        self.actor = actor
        self.tenant = tenant
        self.resource = resource
        self.action = action
        self.details = details
    }
}
