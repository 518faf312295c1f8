// Permissions: bitsec_check_permission, its batch form, policy reload, shadow policy,
// explanations and counters. Decoding and encoding only; PermissionService decides.
internal import BitsecCore
internal import Glibc

/// The body of the single-permission checks: *out_decision is required and 0 until `decide`
/// returns the packed decision. Inlined: a closure call costs the hot path ~45 instructions.
@inline(__always)
private func permissionDecision(_ rt: OpaquePointer?, _ out_decision: UnsafeMutablePointer<UInt64>?,
                                _ decide: (PermissionService) throws(BitsecError) -> UInt64) -> Int32 {
    withRuntime(rt, timed: .permissionCheck) { (r) throws(BitsecError) in
        let out = try clearedOut(out_decision, "out_decision", 0)
        out.pointee = try decide(try r.require(r.permissions))
    }
}

/// Decides whether a principal may perform an action on a resource.
///
/// principal, principal_len: the packed principal, NUL-separated fields
/// "id\0roles\0tenant\0department" or "id\0roles\0tenant\0department\0scopes" (the
/// fields of a verified token's claims: sub, role/roles, tenant_id, department, scope).
/// Roles and scopes are separated by spaces, tabs or commas; empty fields are absent.
/// With four fields the principal carries no scopes and its roles alone decide; with five
/// it carries scopes (possibly none) and the result is what its roles grant AND what its
/// scopes allow. At most BITSEC_MAX_PRINCIPAL_BYTES. Roles the policy does not know are
/// ignored (and counted, see bitsec_permission_stats).
/// permission, permission_len: "resource:action", at most BITSEC_MAX_PERMISSION_BYTES.
/// context, context_len: the resource's attributes, "owner_id\0tenant\0department"
/// (exactly three fields, empty ones absent), or NULL/0 for none. A tenant here turns on
/// tenant isolation (unless the policy or the grant waives it).
/// out_decision: receives the decision: BITSEC_PERM_ALLOWED(d), BITSEC_PERM_REASON(d)
/// (a BITSEC_PERM_* reason code), BITSEC_PERM_RULE(d) (the deciding rule's index or -1;
/// its text with bitsec_permission_rule). An unknown resource or action is a denial
/// (BITSEC_PERM_UNKNOWN_RESOURCE / _ACTION), not an error.
/// Denials are emitted as authorization/permission_denied audit events when the runtime
/// has an audit section (and the policy's audit_denials is on). With a shadow policy, both
/// decide and disagreements are counted; the returned decision is always the active one's.
/// Returns BITSEC_OK (whatever the decision); BITSEC_E_INVALID_ARGUMENT (NULL, a principal
/// or context with the wrong number of fields, a permission without ':');
/// BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED (no permissions section); BITSEC_E_CLOSED.
/// Buffers are caller-owned and only read during the call.
/// Thread safety: safe from any thread; a concurrent policy reload is atomic (a decision
/// uses either the old or the new policy, never a mix).
/// Since: 0.1.0
@c(bitsec_check_permission)
public func bitsec_check_permission(_ rt: OpaquePointer?, _ principal: UnsafePointer<CChar>?, _ principal_len: UInt,
                                    _ permission: UnsafePointer<CChar>?, _ permission_len: UInt,
                                    _ context: UnsafePointer<CChar>?, _ context_len: UInt,
                                    _ out_decision: UnsafeMutablePointer<UInt64>?) -> Int32 {
    permissionDecision(rt, out_decision) { (svc) throws(BitsecError) -> UInt64 in
        let p = try PrincipalView.parse(try documentArg(principal, principal_len, "principal"))
        let perm = try permissionArg(permission, permission_len)
        let ctx = try optionalContextArg(context, context_len)
        return try svc.check(p, permission: perm, ctx).raw
    }
}

/// As bitsec_check_permission, with the whole request in one buffer: for language
/// bindings, where every argument of a foreign call costs (the Python binding uses it).
///
/// request, request_len: NUL-separated fields "permission\0" + the packed principal
/// (4 or 5 fields, as bitsec_check_permission) + optionally "\0" and the packed context
/// (3 fields). The count tells the parts apart: 5 or 6 fields without a context, 8 or 9
/// with one; any other count is BITSEC_E_INVALID_ARGUMENT. At most
/// BITSEC_MAX_PRINCIPAL_BYTES; caller-owned, only read during the call.
/// out_decision: receives the decision, as bitsec_check_permission.
/// Returns as bitsec_check_permission.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_check_permission_packed)
public func bitsec_check_permission_packed(_ rt: OpaquePointer?, _ request: UnsafePointer<CChar>?, _ request_len: UInt,
                                           _ out_decision: UnsafeMutablePointer<UInt64>?) -> Int32 {
    permissionDecision(rt, out_decision) { (svc) throws(BitsecError) -> UInt64 in
        let q = try PackedRequest.parse(try documentArg(request, request_len, "request"))
        guard q.permission.count <= PermissionService.maxPermissionBytes else {
            throw .tooLarge("permission exceeds the limit of \(PermissionService.maxPermissionBytes)")
        }
        return try svc.check(q.principal, permission: q.permission, q.context).raw
    }
}

/// As bitsec_check_permission, with the principal taken from a verified token's claims as
/// JSON (for example what the tokens functions return): sub (or user_id), roles / role,
/// scope / scopes / scp (present: the principal carries scopes), tenant_id (or tenant),
/// department; other claims are ignored, as are role values containing separators.
/// The result document of bitsec_verify_token is accepted as it is (its top-level fields
/// follow these rules; the claims it wraps are not read) and decides as the token's claims.
/// Parsing the JSON costs more than the packed principal of bitsec_check_permission: use
/// that one on hot paths.
///
/// claims, claims_len: the claims JSON object, at most BITSEC_MAX_PRINCIPAL_BYTES;
/// caller-owned. Only verified claims must be passed: this function does not verify anything.
/// permission, context, out_decision: as bitsec_check_permission.
/// Returns as bitsec_check_permission, and BITSEC_E_MALFORMED (not a JSON object).
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_check_permission_claims)
public func bitsec_check_permission_claims(_ rt: OpaquePointer?, _ claims: UnsafePointer<CChar>?, _ claims_len: UInt,
                                           _ permission: UnsafePointer<CChar>?, _ permission_len: UInt,
                                           _ context: UnsafePointer<CChar>?, _ context_len: UInt,
                                           _ out_decision: UnsafeMutablePointer<UInt64>?) -> Int32 {
    permissionDecision(rt, out_decision) { (svc) throws(BitsecError) -> UInt64 in
        let packed = try ClaimsPrincipal.pack(try documentArg(claims, claims_len, "claims"))
        let perm = try permissionArg(permission, permission_len)
        let ctx = try optionalContextArg(context, context_len)
        return try packed.withRawBytes { (raw) throws(BitsecError) -> UInt64 in
            try svc.check(try PrincipalView.parse(raw), permission: perm, ctx).raw
        }
    }
}

/// Decides many permissions for one principal in one call (menus, UIs).
///
/// principal, context: as bitsec_check_permission.
/// permissions, permissions_len: "resource:action" entries separated by spaces, commas,
/// tabs or newlines; at most BITSEC_MAX_PERMISSION_BATCH entries and
/// BITSEC_MAX_PRINCIPAL_BYTES bytes.
/// out_decisions: caller-owned array of decisions_cap entries; receives one decision per
/// entry, in order (as bitsec_check_permission's out_decision).
/// out_count: receives the number of entries, also when decisions_cap is too small.
/// Denials of a batch are not audited one by one (a menu would flood the trail); shadow
/// disagreements are counted as for single checks.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_count holds the entries needed);
/// BITSEC_E_INVALID_ARGUMENT (an entry without ':', NULL); BITSEC_E_TOO_LARGE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; the whole batch is decided by one policy.
/// Since: 0.1.0
@c(bitsec_check_permissions)
public func bitsec_check_permissions(_ rt: OpaquePointer?, _ principal: UnsafePointer<CChar>?, _ principal_len: UInt,
                                     _ permissions: UnsafePointer<CChar>?, _ permissions_len: UInt,
                                     _ context: UnsafePointer<CChar>?, _ context_len: UInt,
                                     _ out_decisions: UnsafeMutablePointer<UInt64>?, _ decisions_cap: UInt,
                                     _ out_count: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt, timed: .permissionCheck) { (r) throws(BitsecError) in
        let out_count = try clearedOut(out_count, "out_count", 0)
        let svc = try r.require(r.permissions)
        let p = try PrincipalView.parse(try documentArg(principal, principal_len, "principal"))
        let list = try documentArg(permissions, permissions_len, "permissions")
        let ctx = try ResourceContext.parse(try documentArg(context, context_len, "context"))
        let cap = decisions_cap > UInt(PermissionService.maxBatch) ? PermissionService.maxBatch : Int(decisions_cap)
        let n = try svc.checkBatch(p, permissions: byteSlice(list), ctx, into: out_decisions, capacity: cap)
        if n < 0 {
            out_count.pointee = UInt(-n)
            throw BitsecError(.bufferTooSmall, "\(-n) decisions, decisions_cap is \(decisions_cap)")
        }
        out_count.pointee = UInt(n)
    }
}

/// The text of the rule that made a decision, e.g. "operator: allow inspections:update if
/// owner_only" or "deny system:delete for every role": for 403 details, logs and audits.
///
/// decision: a decision returned by bitsec_check_permission(s) on this runtime.
/// out_buf, out_cap, out_len: caller-owned output (NUL written after the text when there
/// is room); *out_len receives the length, also when the buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_NOT_FOUND (no rule decided -- an unknown resource or action,
/// or no grant -- or the policy was replaced since the decision);
/// BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_permission_rule)
public func bitsec_permission_rule(_ rt: OpaquePointer?, _ decision: UInt64, _ out_buf: UnsafeMutablePointer<CChar>?,
                                   _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let text = try r.require(r.permissions).ruleText(PermissionDecision(raw: decision))
        try writeOutput(Array(text.utf8), out_buf, out_cap, out_len)
    }
}

/// The stable text of a reason code: "granted", "no_grant", "denied_by_rule",
/// "condition_failed:owner_only", "condition_failed:department", "tenant_mismatch",
/// "scope_missing", "unknown_resource", "unknown_action"; "unknown" for other values.
///
/// reason: a BITSEC_PERM_* reason code (BITSEC_PERM_REASON(decision)).
/// Returns a static NUL-terminated string; never free it.
/// Thread safety: safe from any thread.
/// Since: 0.1.0 (named bitsec_permission_reason before 0.2.0)
@c(bitsec_permission_reason_name)
public func bitsec_permission_reason_name(_ reason: Int32) -> UnsafePointer<CChar> {
    var text: StaticString = "unknown"
    if reason >= 0, reason <= 255, let r = PermissionReason(rawValue: UInt8(reason)) { text = r.text }
    return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Replaces the active policy (a policy document as in docs/configuration.md).
///
/// policy, policy_len: the policy JSON, at most BITSEC_MAX_CONFIG_BYTES; caller-owned.
/// The policy is validated and compiled first; on any error the active policy stays.
/// The shadow policy, if any, stays. Emits a key_management/policy_reloaded audit event.
/// With a host store region (store.host), every process of the host that uses the region
/// applies the same policy at its next call.
/// Returns BITSEC_OK; BITSEC_E_CONFIG (the detail names the field, the unknown name or the
/// inheritance cycle); BITSEC_E_TOO_LARGE; BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; atomic for concurrent decisions.
/// Since: 0.1.0
@c(bitsec_permission_policy_load)
public func bitsec_permission_policy_load(_ rt: OpaquePointer?, _ policy: UnsafePointer<CChar>?, _ policy_len: UInt) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        _ = try r.require(r.permissions)
        try r.loadPolicy(try bytesArg(UnsafeRawPointer(policy), policy_len, "policy", max: Limits.maxConfigBytes))
    }
}

/// Sets the shadow policy: a candidate decided beside the active one on every check,
/// whose disagreements (allowed vs denied) are counted (bitsec_permission_stats) and
/// audited as authorization/shadow_disagreement, without changing any decision.
///
/// policy, policy_len: the candidate policy JSON; NULL/0 removes the shadow policy.
/// Loading or removing restarts the shadow counters.
/// Returns BITSEC_OK; BITSEC_E_CONFIG; BITSEC_E_TOO_LARGE; BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; atomic for concurrent decisions.
/// Since: 0.1.0
@c(bitsec_permission_shadow_load)
public func bitsec_permission_shadow_load(_ rt: OpaquePointer?, _ policy: UnsafePointer<CChar>?, _ policy_len: UInt) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        _ = try r.require(r.permissions)
        try r.loadShadowPolicy(try bytesArg(UnsafeRawPointer(policy), policy_len, "policy", max: Limits.maxConfigBytes))
    }
}

/// The permission engine's counters and compiled sizes, as JSON: {"policy": {generation,
/// roles, resources, actions, rules, cells, tenant_isolation}, "shadow": {...} or null,
/// "unknown_roles", "shadow_decisions", "shadow_disagreements", "reloads"}.
///
/// out_buf, out_cap, out_len: caller-owned output, as bitsec_runtime_describe.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed);
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread (counters are read without stopping callers).
/// Since: 0.1.0
@c(bitsec_permission_stats)
public func bitsec_permission_stats(_ rt: OpaquePointer?, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                    _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        try writeOutput(r.require(r.permissions).stats().serialized, out_buf, out_cap, out_len)
    }
}
