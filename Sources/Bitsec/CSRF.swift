// CSRF: synchronizer tokens, signed double-submit cookies and the Origin / Sec-Fetch-Site
// check (the csrf section).
internal import BitsecCore

/// Issues a synchronizer CSRF token bound to a session: base64url of a version, the issue
/// time, 16 random bytes and an HMAC-SHA256 under the runtime's csrf key over the SHA-256
/// of the session identifier and those fields. Store it in the session (or render it into
/// the page) and check what the page sends back with bitsec_csrf_token_verify. The token
/// never contains the session identifier.
///
/// rt: the runtime (its configuration must have a csrf section).
/// session_id, session_id_len: the session identifier (or any value that is secret to the
/// session and stable for its life), 1 to BITSEC_CSRF_MAX_BINDING_BYTES bytes; caller-owned.
/// at: Unix seconds of issue; 0 means now.
/// out_buf, out_cap: caller-owned buffer for the token (always BITSEC_CSRF_TOKEN_BYTES ASCII
/// bytes), NUL-terminated when there is room.
/// out_len: receives the token's length (also on BITSEC_E_BUFFER_TOO_SMALL).
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_INVALID_ARGUMENT (NULL, empty
/// session_id); BITSEC_E_TOO_LARGE (session_id over the limit); BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread, concurrently with bitsec_csrf_keys_reload.
/// Since: 0.3.0
@c(bitsec_csrf_token_issue)
public func bitsec_csrf_token_issue(_ rt: OpaquePointer?, _ session_id: UnsafePointer<CChar>?, _ session_id_len: UInt, _ at: Int64,
                                    _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_len = try requiredOut(out_len, "out_len")
        out_len.pointee = 0
        let sid = try boundedBytesArg(session_id, session_id_len, "session_id", max: CSRFToken.maxBindingBytes)
        let token = try r.require(r.csrf).issue(kind: .synchronizer, binding: sid, at: at)
        try writeOutput(token, out_buf, out_cap, out_len)
    }
}

/// Checks a synchronizer CSRF token presented with a request (header or form field) against
/// the session it must belong to: the MAC under the csrf key or one of its previous_keys,
/// compared in constant time, then the age (csrf.max_age_s). A refusal is a decision: the
/// call returns BITSEC_OK and *out_reason says why (BITSEC_CSRF_MISSING for an empty token,
/// BITSEC_CSRF_MALFORMED, BITSEC_CSRF_INVALID for a forged token or another session's,
/// BITSEC_CSRF_EXPIRED).
///
/// rt: the runtime (csrf section).
/// session_id, session_id_len: as bitsec_csrf_token_issue.
/// token, token_len: the presented token, caller-owned; NULL with 0 is an absent token.
/// Longer than BITSEC_CSRF_MAX_TOKEN_BYTES is BITSEC_CSRF_MALFORMED without decoding.
/// at: Unix seconds to judge the age at; 0 means now.
/// out_reason: receives BITSEC_CSRF_VALID (0) or a BITSEC_CSRF_* reason.
/// Returns BITSEC_OK (decision in *out_reason); BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_TOO_LARGE (session_id over its limit, token_len over BITSEC_MAX_ARGUMENT_BYTES);
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread, concurrently with bitsec_csrf_keys_reload.
/// Since: 0.3.0
@c(bitsec_csrf_token_verify)
public func bitsec_csrf_token_verify(_ rt: OpaquePointer?, _ session_id: UnsafePointer<CChar>?, _ session_id_len: UInt,
                                     _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ at: Int64,
                                     _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let sid = try boundedBytesArg(session_id, session_id_len, "session_id", max: CSRFToken.maxBindingBytes)
        let t = try bytesArg(UnsafeRawPointer(token), token_len, "token")
        out_reason.pointee = try r.require(r.csrf).verify(kind: .synchronizer, binding: sid, token: t, at: at).rawValue
    }
}

/// Issues the value of a signed double-submit CSRF cookie bound to a session binding value
/// (for stateless servers: the session identifier, or a value derived from the
/// authenticated session). Set it as a cookie the page can read and have the page repeat
/// it in a header or form field; check both with bitsec_csrf_cookie_verify. Its MAC label
/// differs from the synchronizer token's: neither kind verifies as the other.
///
/// rt, binding, binding_len, at, out_buf, out_cap, out_len: as bitsec_csrf_token_issue
/// (binding in place of session_id).
/// Returns as bitsec_csrf_token_issue.
/// Thread safety: safe from any thread, concurrently with bitsec_csrf_keys_reload.
/// Since: 0.3.0
@c(bitsec_csrf_cookie_issue)
public func bitsec_csrf_cookie_issue(_ rt: OpaquePointer?, _ binding: UnsafePointer<CChar>?, _ binding_len: UInt, _ at: Int64,
                                     _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_len = try requiredOut(out_len, "out_len")
        out_len.pointee = 0
        let b = try boundedBytesArg(binding, binding_len, "binding", max: CSRFToken.maxBindingBytes)
        let token = try r.require(r.csrf).issue(kind: .doubleSubmit, binding: b, at: at)
        try writeOutput(token, out_buf, out_cap, out_len)
    }
}

/// Checks a signed double-submit request: the cookie's value and the submitted value
/// (header or form field) must be equal (constant time) and the cookie's value must verify
/// for the binding (MAC, then age). A refusal is a decision: BITSEC_OK with *out_reason
/// (BITSEC_CSRF_MISSING when either is empty, BITSEC_CSRF_MISMATCH when they differ, then
/// as bitsec_csrf_token_verify).
///
/// rt: the runtime (csrf section).
/// binding, binding_len: as bitsec_csrf_cookie_issue.
/// cookie, cookie_len: the cookie's value; submitted, submitted_len: the header's or form
/// field's value; caller-owned; NULL with 0 is absent.
/// at: Unix seconds; 0 means now.
/// out_reason: receives BITSEC_CSRF_VALID (0) or a BITSEC_CSRF_* reason.
/// Returns as bitsec_csrf_token_verify.
/// Thread safety: safe from any thread, concurrently with bitsec_csrf_keys_reload.
/// Since: 0.3.0
@c(bitsec_csrf_cookie_verify)
public func bitsec_csrf_cookie_verify(_ rt: OpaquePointer?, _ binding: UnsafePointer<CChar>?, _ binding_len: UInt,
                                      _ cookie: UnsafePointer<CChar>?, _ cookie_len: UInt,
                                      _ submitted: UnsafePointer<CChar>?, _ submitted_len: UInt, _ at: Int64,
                                      _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let b = try boundedBytesArg(binding, binding_len, "binding", max: CSRFToken.maxBindingBytes)
        let c = try bytesArg(UnsafeRawPointer(cookie), cookie_len, "cookie")
        let s = try bytesArg(UnsafeRawPointer(submitted), submitted_len, "submitted")
        out_reason.pointee = try r.require(r.csrf).verifyDoubleSubmit(binding: b, cookie: c, submitted: s, at: at).rawValue
    }
}

/// The Origin / Sec-Fetch-Site check of a request (OWASP CSRF Prevention Cheat Sheet).
/// Safe methods (GET, HEAD, OPTIONS, TRACE) are always BITSEC_CSRF_VALID. For any other
/// method: an Origin in csrf.allowed_origins (scheme and host compared case-insensitively,
/// the default port ignored) is valid; else Sec-Fetch-Site same-origin or none is valid;
/// else an Origin (including "null") is BITSEC_CSRF_ORIGIN_NOT_ALLOWED and a
/// Sec-Fetch-Site of cross-site or same-site is BITSEC_CSRF_CROSS_SITE; with neither
/// header csrf.missing_origin decides (default "refuse": BITSEC_CSRF_ORIGIN_MISSING). A
/// value over BITSEC_CSRF_MAX_HEADER_BYTES or not UTF-8 matches nothing.
///
/// rt: the runtime (csrf section).
/// method, method_len: the HTTP method (any case); caller-owned.
/// origin, origin_len: the Origin header's value; NULL with 0 (or empty) means absent.
/// fetch_site, fetch_site_len: the Sec-Fetch-Site header's value; NULL with 0 means absent.
/// out_reason: receives BITSEC_CSRF_VALID (0) or a BITSEC_CSRF_* reason.
/// Returns BITSEC_OK (decision in *out_reason); BITSEC_E_INVALID_ARGUMENT (NULL with a
/// non-zero length, out_reason NULL); BITSEC_E_TOO_LARGE (a length over
/// BITSEC_MAX_ARGUMENT_BYTES); BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_csrf_origin_check)
public func bitsec_csrf_origin_check(_ rt: OpaquePointer?, _ method: UnsafePointer<CChar>?, _ method_len: UInt,
                                     _ origin: UnsafePointer<CChar>?, _ origin_len: UInt,
                                     _ fetch_site: UnsafePointer<CChar>?, _ fetch_site_len: UInt,
                                     _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let m = try bytesArg(UnsafeRawPointer(method), method_len, "method")
        let o = try bytesArg(UnsafeRawPointer(origin), origin_len, "origin")
        let f = try bytesArg(UnsafeRawPointer(fetch_site), fetch_site_len, "fetch_site")
        guard m.count > 0 else { throw .invalid("method is empty") }
        out_reason.pointee = try r.require(r.csrf).origins.check(method: m, origin: o, fetchSite: f).rawValue
    }
}

/// Replaces the csrf keys at run time, atomically: checks in flight finish with the old
/// keys, later ones use the new. To rotate, put the new key in key and the old one first in
/// previous_keys, and keep it there for at least csrf.max_age_s. Each attempt is recorded
/// as an audit event (key_management, keys_reloaded, resource csrf) with the number of keys,
/// never key material. On any error nothing changes. With a host store region
/// (store.host), every process of the host that uses the region applies the same keys at
/// its next call; without one, only this process changes (call it in each worker).
///
/// keys, keys_len: a JSON object {"key": secret, "previous_keys": [secret, ...]} with
/// secrets as in the configuration (file, env, or value when allow_inline_secrets), at most
/// BITSEC_MAX_CONFIG_BYTES; caller-owned.
/// Returns BITSEC_OK; BITSEC_E_CONFIG (the detail names the field); BITSEC_E_TOO_LARGE;
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread, concurrently with checks.
/// Since: 0.3.0
@c(bitsec_csrf_keys_reload)
public func bitsec_csrf_keys_reload(_ rt: OpaquePointer?, _ keys: UnsafePointer<CChar>?, _ keys_len: UInt) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        _ = try r.require(r.csrf)
        let b = try boundedBytesArg(keys, keys_len, "keys", max: Limits.maxConfigBytes)
        try r.reloadCSRFKeys(b)
    }
}

/// The stable name of a BITSEC_CSRF_* reason ("valid", "csrf_token_missing",
/// "csrf_token_invalid", "origin_not_allowed", ...): the detail a web framework can return.
///
/// reason: any value; unknown codes give "unknown".
/// Returns a static NUL-terminated string; never free it.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_csrf_reason_name)
public func bitsec_csrf_reason_name(_ reason: Int32) -> UnsafePointer<CChar> {
    let text: StaticString = CSRFReason(rawValue: reason)?.name ?? "unknown"
    return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}
