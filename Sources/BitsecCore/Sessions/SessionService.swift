internal import Synchronization

/// The `sessions` capability: server-side sessions for browsers (create, validate with an
/// idle timer and a client binding, rotate, list, revoke one or all of a user's), in the
/// `process`, `host` or `redis` store.
///
/// ```json
/// "sessions": {"store": "redis", "absolute_timeout_seconds": 86400, "idle_timeout_seconds": 1800,
///              "binding": "client_address", "ipv4_prefix": 24, "ipv6_prefix": 64,
///              "max_sessions_per_user": 10, "max_keys": 100000}
/// ```
///
/// A session's identifier (`session_id`) is the one its access and refresh tokens carry: when
/// the `tokens` section is configured, ending a session (revoke, revoke_user, a binding
/// mismatch) also revokes every token of that session issued until then (subject = the
/// session's user), and a replayed refresh token ends its session.
///
/// Thread safety: every method may be called from any thread.
public final class SessionService: Capability {
    public static let sectionName = "sessions"

    public let store: any SessionStore
    public let storeKind: StoreKind
    public let absoluteTimeout: Int64
    public let idleTimeout: Int64
    public let binding: SessionBinding
    public let ipv4Prefix: Int
    public let ipv6Prefix: Int
    public let maxPerUser: Int
    public let maxKeys: Int
    let audit: (any AuditHook)?
    let tokens: TokenService?

    public static let defaultAbsoluteTimeout: Int64 = 86_400
    public static let defaultIdleTimeout: Int64 = 1_800
    /// Longest client address and user agent looked at (bytes).
    public static let maxClientBytes = 256
    public static let maxUserAgentBytes = 1024

    init(store: any SessionStore, storeKind: StoreKind, absoluteTimeout: Int64, idleTimeout: Int64, binding: SessionBinding,
         ipv4Prefix: Int, ipv6Prefix: Int, maxPerUser: Int, maxKeys: Int, audit: (any AuditHook)?, tokens: TokenService?) {
        self.store = store; self.storeKind = storeKind; self.absoluteTimeout = absoluteTimeout; self.idleTimeout = idleTimeout
        self.binding = binding; self.ipv4Prefix = ipv4Prefix; self.ipv6Prefix = ipv6Prefix; self.maxPerUser = maxPerUser
        self.maxKeys = maxKeys; self.audit = audit; self.tokens = tokens
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> SessionService {
        let store = try context.stores.settings.select(o, field: "store")
        let abs = try o.int("absolute_timeout_seconds", in: 60...(366 * 86_400), default: defaultAbsoluteTimeout)
        let idle = try o.int("idle_timeout_seconds", in: 0...(366 * 86_400), default: defaultIdleTimeout)
        let b = try o.choice("binding", SessionBinding.allCases.map(\.rawValue), default: SessionBinding.clientAddress.rawValue)
        let v4 = try o.int("ipv4_prefix", in: 8...32, default: 24)
        let v6 = try o.int("ipv6_prefix", in: 16...128, default: 64)
        let perUser = try o.int("max_sessions_per_user", in: 1...1000, default: 10)
        let maxKeys = try o.int("max_keys", in: 64...100_000_000, default: Int64(StoreSettings.defaultMaxKeys(store)))
        try o.finish()
        let s: any SessionStore
        if store == .redis, let redis = context.redis {
            s = RedisSessionStore(pool: redis, absoluteTimeout: abs)
        } else {
            let placement = try context.stores.placement(store, field: o.fieldPath("store"))
            s = try MemorySessionStore(maxKeys: Int(maxKeys), maxPerUser: Int(perUser), placement: placement, store: store)
        }
        return SessionService(store: s, storeKind: store, absoluteTimeout: abs, idleTimeout: idle, binding: SessionBinding(rawValue: b) ?? .clientAddress,
                              ipv4Prefix: Int(v4), ipv6Prefix: Int(v6), maxPerUser: Int(perUser), maxKeys: Int(maxKeys),
                              audit: context.audit, tokens: context.tokens)
    }

    public func describe() -> JSONValue {
        func n(_ v: Int64) -> JSONValue { .number(JSONNumber(int64: v)) }
        return .object(JSONObject([
            ("store", .string(storeKind.rawValue)),
            ("absolute_timeout_seconds", n(absoluteTimeout)),
            ("idle_timeout_seconds", n(idleTimeout)),
            ("binding", .string(binding.rawValue)),
            ("ipv4_prefix", n(Int64(ipv4Prefix))),
            ("ipv6_prefix", n(Int64(ipv6Prefix))),
            ("max_sessions_per_user", n(Int64(maxPerUser))),
            ("max_keys", n(Int64(maxKeys))),
        ]))
    }

    public var boundedTables: [BoundedTableStats] { (store as? MemorySessionStore)?.tableStats ?? [] }

    func client(_ address: String, _ userAgent: [UInt8]) -> SessionClient {
        SessionClient(address: Array(address.utf8), userAgent: userAgent, ipv4Prefix: ipv4Prefix, ipv6Prefix: ipv6Prefix)
    }

    // MARK: - Operations

    /// A new session: its token (the secret for the cookie), identifier and absolute expiry.
    public struct Created: Sendable {
        public let token: String
        public let id: String
        public let expires: Int64
    }

    /// Creates a session for `user` (1-128 bytes) of `tenant` (0-64 bytes, empty: none),
    /// bound by the configured policy to `client` (the client's address) or `userAgent`.
    /// When the user already holds `max_sessions_per_user` sessions, the oldest ends (and
    /// its tokens are revoked).
    public func create(user: String, tenant: String, client address: String, userAgent: [UInt8], at: Int64 = 0) throws(BitsecError) -> Created {
        let u = Array(user.utf8), t = Array(tenant.utf8)
        guard !u.isEmpty, u.count <= SessionRecord.maxUserBytes else { throw .invalid("user must be 1 to \(SessionRecord.maxUserBytes) bytes") }
        guard t.count <= SessionRecord.maxTenantBytes else { throw .invalid("tenant must be at most \(SessionRecord.maxTenantBytes) bytes") }
        if binding == .clientAddress && address.isEmpty { throw .invalid("the client address is required: sessions are bound to it (binding client_address)") }
        if binding == .userAgent && userAgent.isEmpty { throw .invalid("the user agent is required: sessions are bound to it (binding user_agent)") }
        let now = Clock.resolve(at)
        let c = client(address, userAgent)
        let (token, id) = try SessionToken.make(tag: SessionToken.tag(user: u, tenant: t))
        let expires = now.addingReportingOverflow(absoluteTimeout).overflow ? Int64.max : now + absoluteTimeout
        guard let digest = SessionToken.bindingDigestChecked(kind: binding.code, c.value(kind: binding.code)) else {
            throw BitsecError(.crypto, "SHA-256 failed")
        }
        let r = SessionRecord(user: u, tenant: t, created: now, lastSeen: now, expires: expires, idle: idleTimeout,
                              binding: digest, kind: binding.code)
        let ended = try store.create(id: id, record: r, maxPerUser: maxPerUser, now: now)
        for old in ended { try revokeTokens(id: old, user: user, tenant: tenant, now: now) }
        return Created(token: token, id: id, expires: expires)
    }

    /// A validation's decision and, when valid, the session.
    public struct Validation: Sendable {
        public let reason: SessionReason
        public let id: String?
        public let record: SessionRecord?
        public var isValid: Bool { reason == .valid }
    }

    /// Validates a session token presented by `client` with `userAgent` and touches its
    /// idle timer. A binding mismatch ends the session (and revokes its tokens) and emits a
    /// `session`/`binding_mismatch` audit event.
    public func validate(token: UnsafeRawBufferPointer, client address: String, userAgent: [UInt8], at: Int64 = 0) throws(BitsecError) -> Validation {
        guard let id = SessionToken.id(ofToken: token) else { return Validation(reason: .unknown, id: nil, record: nil) }
        let now = Clock.resolve(at)
        return try finish(id: id, try store.validate(id: id, client: client(address, userAgent), now: now), now: now)
    }

    private func finish(id: String, _ c: SessionCheck, now: Int64) throws(BitsecError) -> Validation {
        switch c {
        case .valid(let r):
            return Validation(reason: .valid, id: id, record: r)
        case .refused(let reason, let r):
            if reason == .bindingMismatch, let r {
                let user = String(decoding: r.user, as: UTF8.self)
                if let audit, audit.automaticEventsEnabled {
                    audit.emitAutomatic(AutomaticAuditEvent(
                        type: "session", subtype: "binding_mismatch", result: "failure", reason: reason.text, actor: user,
                        tenant: r.tenant.isEmpty ? nil : String(decoding: r.tenant, as: UTF8.self),
                        details: [("session_id", .string(id)), ("binding", .string(bindingName(r.kind)))]))
                }
                try revokeTokens(id: id, user: user, tenant: String(decoding: r.tenant, as: UTF8.self), now: now)
            }
            return Validation(reason: reason, id: nil, record: nil)
        }
    }

    private func bindingName(_ k: UInt8) -> String {
        SessionBinding.allCases.first { $0.code == k }?.rawValue ?? "none"
    }

    /// Validates as `validate`, then gives the session a new token and identifier (at login
    /// and at a change of privilege: the old token stops working, so a token planted before
    /// login is worthless). The session keeps its creation time and absolute expiry.
    public func rotate(token: UnsafeRawBufferPointer, client address: String, userAgent: [UInt8], at: Int64 = 0) throws(BitsecError) -> (Validation, Created?) {
        guard let id = SessionToken.id(ofToken: token), let tag = SessionToken.parts(ofID: id)?.tag else {
            return (Validation(reason: .unknown, id: nil, record: nil), nil)
        }
        let now = Clock.resolve(at)
        let (newToken, newID) = try SessionToken.make(tag: tag)
        let v = try finish(id: newID, try store.rotate(id: id, newID: newID, client: client(address, userAgent), now: now), now: now)
        guard v.isValid, let r = v.record else {
            return (Validation(reason: v.reason, id: nil, record: nil), nil)
        }
        return (v, Created(token: newToken, id: newID, expires: r.expires))
    }

    /// Ends one session, given its token or its identifier; true when there was one. Its
    /// tokens are revoked.
    @discardableResult
    public func revoke(_ session: UnsafeRawBufferPointer, at: Int64 = 0) throws(BitsecError) -> Bool {
        let id: String
        if let i = SessionToken.id(ofToken: session) {
            id = i
        } else {
            guard session.count == SessionToken.idLength else { return false }
            id = String(decoding: session, as: UTF8.self)
        }
        let now = Clock.resolve(at)
        guard let r = try store.revoke(id: id, now: now) else { return false }
        try revokeTokens(id: id, user: String(decoding: r.user, as: UTF8.self), tenant: String(decoding: r.tenant, as: UTF8.self),
                         now: now)
        return true
    }

    public func revoke(id: String, at: Int64 = 0) throws(BitsecError) -> Bool {
        try Array(id.utf8).withRawBytes { (raw) throws(BitsecError) -> Bool in try revoke(raw, at: at) }
    }

    /// Ends every session of a user (at a password change, anonymisation, "log out
    /// everywhere"); the number ended. Their tokens are revoked.
    public func revokeUser(user: String, tenant: String, at: Int64 = 0) throws(BitsecError) -> Int {
        let (u, t) = try checkUser(user, tenant)
        let now = Clock.resolve(at)
        let ids = try store.revokeUser(user: u, tenant: t, now: now)
        for id in ids { try revokeTokens(id: id, user: user, tenant: tenant, now: now) }
        return ids.count
    }

    /// The live sessions of a user, oldest first.
    public func list(user: String, tenant: String, at: Int64 = 0) throws(BitsecError) -> [(id: String, record: SessionRecord)] {
        let (u, t) = try checkUser(user, tenant)
        return try store.list(user: u, tenant: t, now: Clock.resolve(at))
    }

    private func checkUser(_ user: String, _ tenant: String) throws(BitsecError) -> ([UInt8], [UInt8]) {
        let u = Array(user.utf8), t = Array(tenant.utf8)
        guard !u.isEmpty, u.count <= SessionRecord.maxUserBytes else { throw .invalid("user must be 1 to \(SessionRecord.maxUserBytes) bytes") }
        guard t.count <= SessionRecord.maxTenantBytes else { throw .invalid("tenant must be at most \(SessionRecord.maxTenantBytes) bytes") }
        return (u, t)
    }

    /// Revokes the tokens carrying `session_id` = id and `sub` = user, issued until now (a
    /// full in-process table widens it to the user in `tenant`, empty: none).
    private func revokeTokens(id: String, user: String, tenant: String, now: Int64) throws(BitsecError) {
        guard let tokens else { return }
        _ = try tokens.revokeSession(id, subject: user, tenant: tenant.isEmpty ? nil : tenant, at: now)
    }

    /// Called by the token service when a refresh token of session `id` was replayed.
    func familyRevoked(id: String, at now: Int64) {
        guard SessionToken.parts(ofID: id) != nil else { return }
        _ = try? store.revoke(id: id, now: now)
    }

    // MARK: - Output

    /// The JSON of a session: `{"session_id","user","tenant","created_at","last_seen_at","expires_at","idle_expires_at"}`.
    public static func json(id: String, _ r: SessionRecord, into w: inout JSONWriter) {
        w.raw("{\"session_id\":")
        w.writeString(id)
        w.raw(",\"user\":")
        w.writeString(String(decoding: r.user, as: UTF8.self))
        w.raw(",\"tenant\":")
        if r.tenant.isEmpty { w.raw("null") } else { w.writeString(String(decoding: r.tenant, as: UTF8.self)) }
        w.raw(",\"created_at\":")
        w.writeInt(r.created)
        w.raw(",\"last_seen_at\":")
        w.writeInt(r.lastSeen)
        w.raw(",\"expires_at\":")
        w.writeInt(r.expires)
        w.raw(",\"valid_until\":")
        w.writeInt(r.validUntil)
        w.raw("}")
    }
}
