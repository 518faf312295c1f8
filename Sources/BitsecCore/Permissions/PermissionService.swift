internal import Synchronization

/// The `permissions` capability: a compiled RBAC engine (see docs/configuration.md).
///
/// Configuration section:
/// - `policy` (object) or `policy_file` (path): the active policy (`PolicyDocument`);
/// - `shadow_policy` / `shadow_policy_file`: an optional candidate evaluated beside it;
/// - `audit_denials` (bool, default true): emit `authorization`/`permission_denied` events.
///
/// The compiled policies live in one immutable `State` swapped under a mutex: a decision
/// takes the current state (one uncontended lock and a retain), so a reload is atomic for
/// every thread that is deciding.
public final class PermissionService: Capability {
    public static let sectionName = "permissions"
    /// Longest `resource:action` accepted.
    public static let maxPermissionBytes = 1024
    /// Largest packed principal or context accepted.
    public static let maxPrincipalBytes = 64 << 10
    /// Most permissions decided by one batch call.
    public static let maxBatch = 4096

    final class State: Sendable {
        let active: CompiledPolicy
        let shadow: CompiledPolicy?
        init(active: CompiledPolicy, shadow: CompiledPolicy?) { self.active = active; self.shadow = shadow }
    }

    private let state: Mutex<State>
    private let generations = Atomic<UInt64>(0)
    private let unknownRoles = Atomic<Int>(0)
    private let shadowDecisions = Atomic<Int>(0)
    private let shadowDisagreements = Atomic<Int>(0)
    private let reloads = Atomic<Int>(0)
    private let audit: (any AuditHook)?
    public let auditDenials: Bool

    private init(active: PolicyDocument, shadow: PolicyDocument?, audit: (any AuditHook)?, auditDenials: Bool) throws(BitsecError) {
        self.audit = audit
        self.auditDenials = auditDenials && audit != nil
        let a = try CompiledPolicy(active, generation: generations.add(1, ordering: .relaxed).newValue)
        let s = try shadow.map { (d) throws(BitsecError) in try CompiledPolicy(d, generation: 0) }
        state = Mutex(State(active: a, shadow: s))
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> PermissionService {
        let active = try policy(o, "policy", required: true)
        let shadow = try policy(o, "shadow_policy", required: false)
        let auditDenials = try o.bool("audit_denials", default: true)
        try o.finish()
        guard let active else { throw .config("\(o.fieldPath("policy")) or \(o.fieldPath("policy_file")) is required") }
        return try PermissionService(active: active, shadow: shadow, audit: context.audit, auditDenials: auditDenials)
    }

    /// `key` inline or `key_file`, exactly one.
    private static func policy(_ o: ConfigObject, _ key: String, required: Bool) throws(BitsecError) -> PolicyDocument? {
        let inline = try o.object(key)
        let file = try o.string("\(key)_file")
        if inline != nil && file != nil { throw .config("\(o.fieldPath(key)) and \(o.fieldPath("\(key)_file")) are exclusive") }
        if let inline { return try PolicyDocument.read(inline) }
        if let file {
            let bytes: [UInt8]
            do { bytes = try readFile(file, limit: Limits.maxConfigBytes) } catch {
                throw .config("\(o.fieldPath("\(key)_file")): \(error.detail)")
            }
            return try bytes.withRawBytes { (raw) throws(BitsecError) in try PolicyDocument.parse(raw, path: o.fieldPath("\(key)_file")) }
        }
        return nil
    }

    @inline(__always)
    var current: State { state.withLock { $0 } }

    // MARK: - Decisions

    /// Decides one `resource:action` for a principal. Denials are emitted to the audit hook
    /// (when configured); with a shadow policy, disagreements are counted and audited.
    @inline(__always)
    public func check(_ p: PrincipalView, permission: ByteSlice, _ ctx: ResourceContext) throws(BitsecError) -> PermissionDecision {
        let s = current
        var unknown = 0
        guard let d = s.active.decide(p, permission: permission, ctx, unknownRoles: &unknown) else {
            throw .invalid("permission must be resource:action")
        }
        if unknown > 0 { unknownRoles.add(unknown, ordering: .relaxed) }
        if s.shadow != nil || (!d.allowed && auditDenials) {
            // Off the fast path: split for the shadow policy and the audit event.
            let colon = permission.firstIndex(of: 0x3A) ?? 0
            let resource = permission.prefix(colon), action = permission.suffix(after: colon)
            if let shadow = s.shadow { compare(d, shadow, p, resource, action, ctx, s.active) }
            if !d.allowed, auditDenials, let audit, audit.automaticEventsEnabled {
                audit.emitAutomatic(denialEvent(d, p, resource, action, s.active))
            }
        }
        return d
    }

    /// Decides each `resource:action` of `permissions` (separated by spaces, commas, tabs
    /// or newlines) into `out`, in order; returns how many there are. Denials in a batch
    /// (menus, UI) are not audited one by one; shadow disagreements are.
    public func checkBatch(_ p: PrincipalView, permissions: ByteSlice, _ ctx: ResourceContext,
                           into out: UnsafeMutablePointer<UInt64>?, capacity: Int) throws(BitsecError) -> Int {
        var n = 0
        var bad = false
        permissions.forEachToken { _ in n += 1; return true }
        guard n <= Self.maxBatch else { throw .tooLarge("permissions: \(n) entries exceeds the limit of \(Self.maxBatch)") }
        guard let out, capacity >= n else { return -n }
        let s = current
        var unknown = 0
        var i = 0
        permissions.forEachToken { t in
            guard let d = s.active.decide(p, permission: t, ctx, unknownRoles: &unknown) else { bad = true; return false }
            if let shadow = s.shadow {
                let colon = t.firstIndex(of: 0x3A) ?? 0
                compare(d, shadow, p, t.prefix(colon), t.suffix(after: colon), ctx, s.active)
            }
            out[i] = d.raw
            i += 1
            return true
        }
        if unknown > 0 { unknownRoles.add(unknown, ordering: .relaxed) }
        if bad { throw .invalid("permissions: every entry must be resource:action") }
        return n
    }

    private func compare(_ d: PermissionDecision, _ shadow: CompiledPolicy, _ p: PrincipalView, _ resource: ByteSlice,
                         _ action: ByteSlice, _ ctx: ResourceContext, _ active: CompiledPolicy) {
        var ignored = 0
        let sd = shadow.decide(p, resource: resource, action: action, ctx, unknownRoles: &ignored)
        shadowDecisions.add(1, ordering: .relaxed)
        guard sd.allowed != d.allowed else { return }
        shadowDisagreements.add(1, ordering: .relaxed)
        guard let audit, audit.automaticEventsEnabled else { return }
        var details: [(key: String, value: JSONValue)] = [
            ("active_reason", .string(d.reason.text.description)),
            ("shadow_reason", .string(sd.reason.text.description)),
            ("shadow_allowed", .bool(sd.allowed)),
        ]
        if let t = text(active, d) { details.append(("active_rule", .string(t))) }
        if let t = text(shadow, sd) { details.append(("shadow_rule", .string(t))) }
        audit.emitAutomatic(AutomaticAuditEvent(
            type: "authorization", subtype: "shadow_disagreement", result: d.allowed ? "success" : "denied",
            reason: d.reason.text.description, actor: p.id.isEmpty ? nil : p.id.string,
            tenant: p.tenant.isEmpty ? nil : p.tenant.string, resource: resource.string, action: action.string, details: details))
    }

    private func denialEvent(_ d: PermissionDecision, _ p: PrincipalView, _ resource: ByteSlice, _ action: ByteSlice,
                             _ policy: CompiledPolicy) -> AutomaticAuditEvent {
        var details: [(key: String, value: JSONValue)] = [("permission", .string("\(resource.string):\(action.string)"))]
        if let t = text(policy, d) { details.append(("rule", .string(t))) }
        return AutomaticAuditEvent(type: "authorization", subtype: "permission_denied", result: "denied",
                                   reason: d.reason.text.description, actor: p.id.isEmpty ? nil : p.id.string,
                                   tenant: p.tenant.isEmpty ? nil : p.tenant.string,
                                   resource: resource.string, action: action.string, details: details)
    }

    private func text(_ policy: CompiledPolicy, _ d: PermissionDecision) -> String? {
        let r = d.rule
        return r >= 0 && r < policy.ruleTexts.count ? policy.ruleTexts[r] : nil
    }

    /// The text of the rule that made `d` (`operator: allow inspections:update if owner_only`).
    public func ruleText(_ d: PermissionDecision) throws(BitsecError) -> String {
        let active = current.active
        guard d.generation == active.generation & 0xFFFF else {
            throw BitsecError(.notFound, "the decision was made by another policy generation")
        }
        guard let t = text(active, d) else { throw BitsecError(.notFound, "no rule decided this decision") }
        return t
    }

    // MARK: - Reload

    /// Replaces the active policy atomically (in-flight decisions finish on the old one).
    /// A policy that does not compile leaves the active one in place.
    public func loadPolicy(_ bytes: UnsafeRawBufferPointer) throws(BitsecError) {
        let doc = try PolicyDocument.parse(bytes, path: "policy")
        let compiled = try CompiledPolicy(doc, generation: generations.add(1, ordering: .relaxed).newValue)
        state.withLock { s in s = State(active: compiled, shadow: s.shadow) }
        reloads.add(1, ordering: .relaxed)
        emitReload(compiled, shadow: false)
    }

    /// Sets (or, with an empty buffer, removes) the shadow policy. Shadow counters restart.
    public func loadShadowPolicy(_ bytes: UnsafeRawBufferPointer) throws(BitsecError) {
        var compiled: CompiledPolicy? = nil
        if bytes.count > 0 {
            let doc = try PolicyDocument.parse(bytes, path: "shadow_policy")
            compiled = try CompiledPolicy(doc, generation: 0)
        }
        state.withLock { s in s = State(active: s.active, shadow: compiled) }
        shadowDecisions.store(0, ordering: .relaxed)
        shadowDisagreements.store(0, ordering: .relaxed)
        if let compiled { emitReload(compiled, shadow: true) }
    }

    private func emitReload(_ p: CompiledPolicy, shadow: Bool) {
        guard let audit, audit.automaticEventsEnabled else { return }
        var details = p.summary()
        details.append(("shadow", .bool(shadow)))
        audit.emitAutomatic(AutomaticAuditEvent(type: "key_management", subtype: "policy_reloaded", result: "success", details: details))
    }

    // MARK: - Introspection

    /// Counters and the compiled policies' sizes.
    public func stats() -> JSONValue {
        let s = current
        func n(_ i: Int) -> JSONValue { .number(JSONNumber(int64: Int64(i))) }
        return .object(JSONObject([
            ("policy", .object(JSONObject(s.active.summary()))),
            ("shadow", s.shadow.map { .object(JSONObject($0.summary())) } ?? .null),
            ("unknown_roles", n(unknownRoles.load(ordering: .relaxed))),
            ("shadow_decisions", n(shadowDecisions.load(ordering: .relaxed))),
            ("shadow_disagreements", n(shadowDisagreements.load(ordering: .relaxed))),
            ("reloads", n(reloads.load(ordering: .relaxed))),
        ]))
    }

    public func describe() -> JSONValue {
        let s = current
        return .object(JSONObject([
            ("policy", .object(JSONObject(s.active.summary()))),
            ("shadow", s.shadow.map { .object(JSONObject($0.summary())) } ?? .null),
            ("audit_denials", .bool(auditDenials)),
        ]))
    }
}
