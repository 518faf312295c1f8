// The request guard: token, scopes, permission and rate limit of one request in one call.
// Decoding and encoding only; RequestGuard (BitsecCore) decides.
internal import BitsecCore
internal import Glibc

/// Byte offsets of the fields of bitsec_guard_result (include/bitsec.h).
private enum GuardResultLayout {
    static let size = 64
    static let decision = 0, httpStatus = 4, tokenReason = 8, permissionReason = 12, permissionRule = 16,
               rateReason = 20, rateLimit = 24, rateRemaining = 32, rateResetAfter = 40, rateRetryAfter = 48,
               rateFlags = 56
}

private func write(_ o: RequestGuard.Outcome, _ p: UnsafeMutableRawPointer) {
    typealias L = GuardResultLayout
    p.storeBytes(of: o.decision.rawValue, toByteOffset: L.decision, as: Int32.self)
    p.storeBytes(of: o.httpStatus, toByteOffset: L.httpStatus, as: Int32.self)
    p.storeBytes(of: o.tokenReason, toByteOffset: L.tokenReason, as: Int32.self)
    p.storeBytes(of: o.permissionReason, toByteOffset: L.permissionReason, as: Int32.self)
    p.storeBytes(of: o.permissionRule, toByteOffset: L.permissionRule, as: Int32.self)
    p.storeBytes(of: o.rateReason, toByteOffset: L.rateReason, as: Int32.self)
    p.storeBytes(of: o.rateLimit, toByteOffset: L.rateLimit, as: Int64.self)
    p.storeBytes(of: o.rateRemaining, toByteOffset: L.rateRemaining, as: Int64.self)
    p.storeBytes(of: o.rateResetAfter, toByteOffset: L.rateResetAfter, as: Int64.self)
    p.storeBytes(of: o.rateRetryAfter, toByteOffset: L.rateRetryAfter, as: Int64.self)
    p.storeBytes(of: o.rateFlags, toByteOffset: L.rateFlags, as: Int64.self)
}

/// Decides one protected request in one call: verifies the bearer token (through the
/// verified-token cache, revocations included), takes from the rate-limit bucket, checks that
/// the token carries the required scopes, then decides the permission for its principal.
/// Each step decides exactly as its own function (bitsec_verify_token, bitsec_rate_limit_take,
/// bitsec_check_permission_claims), with the same audit events. Every request with a category
/// counts against its bucket, refused ones included: a request refused for its token, a scope
/// or the permission takes too (from key; from the user's key with
/// BITSEC_GUARD_FLAG_KEY_BY_SUBJECT and a verified token), so a caller cannot send refused
/// requests, each leaving an audit record, without limit. The answer's precedence: rate
/// limited (429), a refused token (401), a missing scope or a denied permission (403), an
/// unreachable rate-limit store (503, only for a request that is otherwise allowed). A
/// refusal is a decision: the call returns BITSEC_OK and out_guard says why.
///
/// rt: the runtime (a tokens section when a token is given, permissions when a permission
/// is, rate_limits when a category is).
/// token, token_len: the bearer token (not the "Bearer " prefix); NULL/0: no token (then no
/// scopes and no permission may be given). At most BITSEC_MAX_ARGUMENT_BYTES; longer than
/// the tokens section's max_token_bytes is the reason BITSEC_TOKEN_TOO_LARGE.
/// scopes, scopes_len: space-separated OAuth2 scopes the token must all carry (UTF-8); NULL/0:
/// none. A missing one: BITSEC_GUARD_SCOPE_MISSING, HTTP 403. At most BITSEC_MAX_PERMISSION_BYTES.
/// permission, permission_len: "resource:action"; NULL/0: no permission check. At most
/// BITSEC_MAX_PERMISSION_BYTES.
/// context, context_len: the resource's attributes "owner_id\0tenant\0department", as
/// bitsec_check_permission; NULL/0: none.
/// category, category_len: the rate-limit category; NULL/0: no rate limit (unlike
/// bitsec_rate_limit_take, where it means "default"). An unknown one: BITSEC_E_NOT_FOUND.
/// key, key_len: the rate-limit key (1 to BITSEC_RATE_LIMIT_MAX_KEY_BYTES bytes of UTF-8),
/// required with a category; with BITSEC_GUARD_FLAG_KEY_BY_SUBJECT the key is the user's
/// instead when the token verified with a non-empty sub: "user:<sub>", or
/// "tenant:<n>:<tenant>:user:<sub>" when the token names a tenant (tenant_id, else tenant;
/// n: its length in UTF-8 bytes), so that namesakes in two tenants have two buckets (its
/// SHA-256 as "sha256:<hex>" when that is longer than a key may be).
/// cost: tokens to take, 1 to the category's capacity (ignored without a category).
/// at: Unix seconds for the token's time claims and the bucket; 0 means now.
/// flags: BITSEC_GUARD_FLAG_KEY_BY_SUBJECT, BITSEC_GUARD_FLAG_TOKEN_ADVISORY (the token only
/// keys the rate limit: an invalid one, or one whose revocation store is unreachable, is no
/// refusal; no scopes or permission then); other bits are BITSEC_E_INVALID_ARGUMENT.
/// out_guard: caller-owned bitsec_guard_result (include/bitsec.h), written on BITSEC_OK and
/// BITSEC_E_BUFFER_TOO_SMALL: decision (a BITSEC_GUARD_xxx code), http_status (200, 401, 403, 429,
/// 503), token_reason (a BITSEC_TOKEN_xxx reason), permission_reason (a BITSEC_PERM_xxx reason), permission_rule
/// (the deciding rule or -1), rate_reason (a BITSEC_RATE_LIMIT_REASON_xxx code), each
/// BITSEC_GUARD_NOT_CHECKED (-1) when that step did not run; rate_limit, rate_remaining,
/// rate_reset_after, rate_retry_after, rate_flags as bitsec_rate_limit_take's decision (0
/// without a take). A rate limit whose Redis is unreachable (when the category's failure
/// policy does not decide) is BITSEC_GUARD_RATE_UNAVAILABLE, HTTP 503.
/// out_buf, out_cap: caller-owned buffer for the verified token's result document
/// (as bitsec_verify_token's), NUL-terminated when there is room; NULL with cap 0: not
/// written, its size alone in *out_len (BITSEC_OK).
/// out_len: receives the document's length (0 when no token verified).
/// Returns BITSEC_OK (decision in *out_guard); BITSEC_E_BUFFER_TOO_SMALL (out_cap
/// not 0 and too small: the decision is made, *out_guard holds it and the bucket was
/// taken from; only the document is missing, its size in *out_len: read it with
/// bitsec_verify_token, never by calling this function again, which would take twice);
/// BITSEC_E_INVALID_ARGUMENT (NULL, bad flags, scopes or permission without a token, an
/// empty key with a category, cost out of range, at < 0, invalid UTF-8);
/// BITSEC_E_TOO_LARGE; BITSEC_E_NOT_FOUND (unknown category); BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_BACKEND_UNAVAILABLE (revocations in Redis unreachable: no decision, nothing
/// taken); BITSEC_E_CLOSED. Input buffers are caller-owned and only read during the call.
/// Thread safety: safe from any thread, concurrently with key and policy reloads.
/// Since: 0.3.0
@c(bitsec_guard_check)
public func bitsec_guard_check(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt,
                               _ scopes: UnsafePointer<CChar>?, _ scopes_len: UInt,
                               _ permission: UnsafePointer<CChar>?, _ permission_len: UInt,
                               _ context: UnsafePointer<CChar>?, _ context_len: UInt,
                               _ category: UnsafePointer<CChar>?, _ category_len: UInt,
                               _ key: UnsafePointer<CChar>?, _ key_len: UInt, _ cost: Int64, _ at: Int64, _ flags: UInt32,
                               _ out_guard: UnsafeMutableRawPointer?, _ out_buf: UnsafeMutablePointer<CChar>?,
                               _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        guard let out_guard, let out_len else { throw .invalid("out_guard and out_len are required") }
        try guardCheck(r, token, token_len, scopes, scopes_len, permission, permission_len, context, context_len,
                       category, category_len, key, key_len, cost, at, flags, out_guard, out_buf, out_cap, out_len)
    }
}

/// The body of bitsec_guard_check and bitsec_guard_check_request.
private func guardCheck(_ r: Runtime, _ token: UnsafePointer<CChar>?, _ token_len: UInt,
                        _ scopes: UnsafePointer<CChar>?, _ scopes_len: UInt,
                        _ permission: UnsafePointer<CChar>?, _ permission_len: UInt,
                        _ context: UnsafePointer<CChar>?, _ context_len: UInt,
                        _ category: UnsafePointer<CChar>?, _ category_len: UInt,
                        _ key: UnsafePointer<CChar>?, _ key_len: UInt, _ cost: Int64, _ at: Int64, _ flags: UInt32,
                        _ out_guard: UnsafeMutableRawPointer, _ out_buf: UnsafeMutablePointer<CChar>?,
                        _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>) throws(BitsecError) {
    out_len.pointee = 0
    write(RequestGuard.Outcome(), out_guard)
    guard flags & ~RequestGuard.knownFlags == 0 else { throw .invalid("flags has unknown bits") }
    guard at >= 0 else { throw .invalid("at must be 0 (now) or a Unix time") }
    let tokenBytes = try bytesArg(UnsafeRawPointer(token), token_len, "token", lengthName: "token_len")
    let scopeBytes = try bytesArg(UnsafeRawPointer(scopes), scopes_len, "scopes",
                                  max: PermissionService.maxPermissionBytes)
    let perm = permission_len == 0 ? nil : try permissionArg(permission, permission_len)
    let ctx = try optionalContextArg(context, context_len)
    var cat: RateLimitCategory? = nil
    var k: String? = nil
    if category != nil && category_len > 0 {
        let svc = try r.require(r.rateLimits)
        cat = try categoryArg(svc, category, category_len)
        k = try keyArg(key, key_len)
    }
    let o = try RequestGuard.check(r, token: tokenBytes.count > 0 ? tokenBytes : nil, scopes: scopeBytes,
                                   permission: perm, context: ctx, category: cat, key: k, cost: cost,
                                   at: at, flags: flags)
    write(o, out_guard)
    guard let doc = o.claims else { return }
    if out_buf == nil && out_cap == 0 {
        out_len.pointee = UInt(doc.count)
        return
    }
    try writeOutput(doc, out_buf, out_cap, out_len)
}

/// The layouts of bitsec_guard_route and bitsec_guard_request (include/bitsec.h).
private enum GuardRouteLayout {
    static let scopes = 0, scopesLen = 8, permission = 16, permissionLen = 24, category = 32, categoryLen = 40,
               cost = 48, flags = 56, reserved = 60
}

private enum GuardRequestLayout {
    static let token = 0, tokenLen = 8, key = 16, keyLen = 24, context = 32, contextLen = 40, at = 48,
               outBuf = 56, outCap = 64, outLen = 72, result = 80
}

/// bitsec_guard_check with its inputs in two structs: the route's requirement, the same for
/// every request of a route (bitsec_guard_route: scopes, permission, category, cost, flags;
/// filled once), and the request's own inputs and outputs (bitsec_guard_request: token,
/// key, context, at; the claims document's buffer; out_len and the result). It decides
/// exactly as bitsec_guard_check called with the same values, field by field, and returns
/// the same codes. For callers whose cost per argument matters more than the call itself
/// (bindings through an FFI: Python's ctypes converts each argument on every call): two
/// pointers instead of nineteen arguments.
///
/// rt: the runtime.
/// route: caller-owned bitsec_guard_route (include/bitsec.h); its reserved field must be 0.
/// Only read during the call.
/// request: caller-owned bitsec_guard_request; its inputs are read and its out_len and
/// result written as bitsec_guard_check's out_len and out_guard (out_buf, out_cap: its
/// claims buffer, as bitsec_guard_check's).
/// Returns as bitsec_guard_check; BITSEC_E_INVALID_ARGUMENT also for a NULL route or
/// request, or a reserved field that is not 0.
/// Thread safety: as bitsec_guard_check; one request struct per call in flight.
/// Since: 0.3.0
@c(bitsec_guard_check_request)
public func bitsec_guard_check_request(_ rt: OpaquePointer?, _ route: UnsafeRawPointer?,
                                       _ request: UnsafeMutableRawPointer?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        guard let route, let request else { throw .invalid("route and request are required") }
        typealias R = GuardRouteLayout
        typealias Q = GuardRequestLayout
        func ptr(_ base: UnsafeRawPointer, _ off: Int) -> UnsafePointer<CChar>? {
            base.loadUnaligned(fromByteOffset: off, as: UnsafePointer<CChar>?.self)
        }
        func size(_ base: UnsafeRawPointer, _ off: Int) -> UInt { base.loadUnaligned(fromByteOffset: off, as: UInt.self) }
        let q = UnsafeRawPointer(request)
        let outLen = request.advanced(by: Q.outLen).assumingMemoryBound(to: UInt.self)
        outLen.pointee = 0
        let out = request.advanced(by: Q.result)
        write(RequestGuard.Outcome(), out)
        guard route.loadUnaligned(fromByteOffset: R.reserved, as: UInt32.self) == 0 else {
            throw .invalid("route: reserved must be 0")
        }
        try guardCheck(r, ptr(q, Q.token), size(q, Q.tokenLen), ptr(route, R.scopes), size(route, R.scopesLen),
                       ptr(route, R.permission), size(route, R.permissionLen), ptr(q, Q.context), size(q, Q.contextLen),
                       ptr(route, R.category), size(route, R.categoryLen), ptr(q, Q.key), size(q, Q.keyLen),
                       route.loadUnaligned(fromByteOffset: R.cost, as: Int64.self),
                       q.loadUnaligned(fromByteOffset: Q.at, as: Int64.self),
                       route.loadUnaligned(fromByteOffset: R.flags, as: UInt32.self), out,
                       UnsafeMutablePointer(mutating: ptr(q, Q.outBuf)), size(q, Q.outCap), outLen)
    }
}
