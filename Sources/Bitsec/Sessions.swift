// Server-side sessions (the sessions section): create, validate, rotate, revoke, list.
internal import BitsecCore

/// A session argument's optional text (client address, user agent, tenant): NULL or length
/// 0 is empty; over `max` is too large; invalid UTF-8 is refused.
private func sessionText(_ p: UnsafePointer<CChar>?, _ len: UInt, _ name: StaticString, max: Int) throws(BitsecError) -> String {
    guard len > 0 else { return "" }
    return try textArg(p, len, name, max: max)
}

/// A user argument: 1 to BITSEC_SESSION_MAX_USER_BYTES bytes of UTF-8.
private func sessionUser(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> String {
    guard len > 0 else { throw .invalid("user is required") }
    return try textArg(p, len, "user", max: SessionRecord.maxUserBytes)
}

/// Copies `s` and a NUL into a caller's fixed-size buffer of `len` + 1 bytes.
private func writeFixed(_ s: String, _ out: UnsafeMutablePointer<CChar>, _ len: Int) {
    var i = 0
    for c in s.utf8.prefix(len) { out[i] = CChar(bitPattern: c); i += 1 }
    out[i] = 0
}

/// Creates a server-side session for a user who just authenticated, bound to the client by
/// the configured policy (sessions.binding: client_address (default: the address's network,
/// IPv4 /24 and IPv6 /64 by default), user_agent or none). The token is the secret to give
/// the client (a cookie); the identifier is public: put it in tokens issued for the session
/// (the session_id claim) and show it in session lists. The store keeps only the
/// identifier, a hash of the token. When the user already holds
/// sessions.max_sessions_per_user sessions, the oldest ends.
///
/// rt: the runtime (sessions section).
/// user, user_len: the user's identifier (UTF-8, 1 to BITSEC_SESSION_MAX_USER_BYTES bytes).
/// tenant, tenant_len: the tenant (UTF-8, 0 to BITSEC_SESSION_MAX_TENANT_BYTES bytes; NULL
/// with 0: none).
/// client, client_len: the client's address (UTF-8, up to BITSEC_SESSION_MAX_CLIENT_BYTES
/// bytes; required with the client_address binding).
/// user_agent, user_agent_len: the User-Agent header (up to
/// BITSEC_SESSION_MAX_USER_AGENT_BYTES bytes; required with the user_agent binding).
/// at: the instant, Unix seconds; 0 means now.
/// out_token: caller-owned buffer of BITSEC_SESSION_TOKEN_LEN + 1 bytes, receives the token
/// and a NUL. out_id: caller-owned buffer of BITSEC_SESSION_ID_LEN + 1 bytes, receives the
/// identifier and a NUL. Both written only on BITSEC_OK.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT (NULL pointer, empty user, invalid UTF-8,
/// a missing bound value, at < 0); BITSEC_E_TOO_LARGE; BITSEC_E_BACKEND_UNAVAILABLE (Redis);
/// BITSEC_E_CRYPTO (no randomness); BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_session_create)
public func bitsec_session_create(_ rt: OpaquePointer?, _ user: UnsafePointer<CChar>?, _ user_len: UInt,
                                  _ tenant: UnsafePointer<CChar>?, _ tenant_len: UInt,
                                  _ client: UnsafePointer<CChar>?, _ client_len: UInt,
                                  _ user_agent: UnsafePointer<CChar>?, _ user_agent_len: UInt, _ at: Int64,
                                  _ out_token: UnsafeMutablePointer<CChar>?, _ out_id: UnsafeMutablePointer<CChar>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_token = try requiredOut(out_token, "out_token")
        let out_id = try requiredOut(out_id, "out_id")
        guard at >= 0 else { throw .invalid("at must be >= 0") }
        let s = try r.require(r.sessions)
        let c = try s.create(user: try sessionUser(user, user_len),
                             tenant: try sessionText(tenant, tenant_len, "tenant", max: SessionRecord.maxTenantBytes),
                             client: try sessionText(client, client_len, "client", max: SessionService.maxClientBytes),
                             userAgent: Array(try sessionText(user_agent, user_agent_len, "user_agent", max: SessionService.maxUserAgentBytes).utf8),
                             at: at)
        writeFixed(c.token, out_token, SessionToken.tokenLength)
        writeFixed(c.id, out_id, SessionToken.idLength)
    }
}

/// Validates a session token presented by a client and touches the session's idle timer.
/// A refused session is a decision (BITSEC_OK with a reason), not an error: unknown (never
/// created, revoked, rotated away, ended, or not a token), expired (the absolute timeout,
/// sessions.absolute_timeout_seconds, default 24 hours), idle timeout (unused for longer than
/// sessions.idle_timeout_seconds, default 30 minutes), binding mismatch (another client
/// address network or user agent than at creation: the session is ended, its tokens are
/// revoked and a "session"/"binding_mismatch" audit event is emitted).
///
/// rt: the runtime (sessions section).
/// token, token_len: the session token (as sent by the client; any bytes, up to
/// BITSEC_MAX_ARGUMENT_BYTES).
/// client, client_len, user_agent, user_agent_len: the request's client address and
/// User-Agent, as bitsec_session_create.
/// at: the instant, Unix seconds; 0 means now.
/// out_reason: receives a BITSEC_SESSION_REASON_* code on BITSEC_OK.
/// out, out_cap, out_len: caller-owned buffer for the session, when valid, as JSON
/// {"session_id","user","tenant","created_at","last_seen_at","expires_at","valid_until"}
/// (tenant null when none; instants in Unix seconds); nothing is written for a refused
/// session (*out_len 0). out NULL with out_cap 0: the decision alone, and *out_len receives
/// the size the JSON needs. A buffer of BITSEC_SESSION_INFO_MAX_BYTES always suffices; a
/// smaller non-NULL one is refused with BITSEC_E_BUFFER_TOO_SMALL before the session is
/// looked at (*out_len = BITSEC_SESSION_INFO_MAX_BYTES).
/// Returns BITSEC_OK for every decision; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_session_validate)
public func bitsec_session_validate(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt,
                                    _ client: UnsafePointer<CChar>?, _ client_len: UInt,
                                    _ user_agent: UnsafePointer<CChar>?, _ user_agent_len: UInt, _ at: Int64,
                                    _ out_reason: UnsafeMutablePointer<Int32>?,
                                    _ out: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let out_len = try requiredOut(out_len, "out_len")
        guard at >= 0 else { throw .invalid("at must be >= 0") }
        let s = try r.require(r.sessions)
        let tok = try bytesArg(token, token_len, "token")
        let cl = try sessionText(client, client_len, "client", max: SessionService.maxClientBytes)
        let ua = try sessionText(user_agent, user_agent_len, "user_agent", max: SessionService.maxUserAgentBytes)
        let maxInfo = UInt(BitsecABI.BITSEC_SESSION_INFO_MAX_BYTES)
        if out != nil || out_cap > 0, out_cap < maxInfo {
            out_len.pointee = maxInfo
            throw BitsecError(.bufferTooSmall, "out_cap must be at least BITSEC_SESSION_INFO_MAX_BYTES (\(maxInfo))")
        }
        let v = try s.validate(token: tok, client: cl, userAgent: Array(ua.utf8), at: at)
        out_reason.pointee = v.reason.rawValue
        guard let id = v.id, let rec = v.record else {
            out_len.pointee = 0
            return
        }
        var w = JSONWriter(reserving: 256)
        SessionService.json(id: id, rec, into: &w)
        if out == nil {
            out_len.pointee = UInt(w.bytes.count)
            return
        }
        try writeOutput(w.bytes, out, out_cap, out_len)
    }
}

/// Gives a valid session a new token and identifier (call it at login, over a session that
/// existed before, and at every change of privilege): the old token stops working at once,
/// so a token an attacker planted before login (session fixation) is worthless. The session
/// is validated first, exactly as bitsec_session_validate (a refused one is not rotated);
/// it keeps its user, creation time and absolute expiry.
///
/// rt, token, token_len, client, client_len, user_agent, user_agent_len, at: as
/// bitsec_session_validate.
/// out_reason: receives a BITSEC_SESSION_REASON_* code on BITSEC_OK.
/// out_token, out_id: as bitsec_session_create; written only when *out_reason is
/// BITSEC_SESSION_REASON_VALID.
/// Returns BITSEC_OK for every decision; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_CRYPTO; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; of concurrent rotations of one token one succeeds.
/// Since: 0.3.0
@c(bitsec_session_rotate)
public func bitsec_session_rotate(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt,
                                  _ client: UnsafePointer<CChar>?, _ client_len: UInt,
                                  _ user_agent: UnsafePointer<CChar>?, _ user_agent_len: UInt, _ at: Int64,
                                  _ out_reason: UnsafeMutablePointer<Int32>?,
                                  _ out_token: UnsafeMutablePointer<CChar>?, _ out_id: UnsafeMutablePointer<CChar>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let out_token = try requiredOut(out_token, "out_token")
        let out_id = try requiredOut(out_id, "out_id")
        guard at >= 0 else { throw .invalid("at must be >= 0") }
        let s = try r.require(r.sessions)
        let tok = try bytesArg(token, token_len, "token")
        let cl = try sessionText(client, client_len, "client", max: SessionService.maxClientBytes)
        let ua = try sessionText(user_agent, user_agent_len, "user_agent", max: SessionService.maxUserAgentBytes)
        let (v, created) = try s.rotate(token: tok, client: cl, userAgent: Array(ua.utf8), at: at)
        out_reason.pointee = v.reason.rawValue
        if let created {
            writeFixed(created.token, out_token, SessionToken.tokenLength)
            writeFixed(created.id, out_id, SessionToken.idLength)
        }
    }
}

/// Ends one session (logout), given its token or its identifier. The tokens issued for it
/// (session_id claim, sub = the session's user) are revoked when the tokens section is
/// configured.
///
/// rt: the runtime (sessions section).
/// session, session_len: a session token or identifier (any bytes up to
/// BITSEC_MAX_ARGUMENT_BYTES; something else ends nothing).
/// at: the instant, Unix seconds; 0 means now.
/// out_revoked: optional (NULL allowed); receives 1 when a session ended, 0 when there was
/// none.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_session_revoke)
public func bitsec_session_revoke(_ rt: OpaquePointer?, _ session: UnsafePointer<CChar>?, _ session_len: UInt, _ at: Int64,
                                  _ out_revoked: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        guard at >= 0 else { throw .invalid("at must be >= 0") }
        let s = try r.require(r.sessions)
        let ended = try s.revoke(try bytesArg(session, session_len, "session"), at: at)
        out_revoked?.pointee = ended ? 1 : 0
    }
}

/// Ends every session of a user: at a password change, when the user is anonymised or
/// deleted, or for "log out everywhere". Their tokens are revoked as by
/// bitsec_session_revoke.
///
/// rt: the runtime (sessions section).
/// user, user_len, tenant, tenant_len: as bitsec_session_create.
/// at: the instant, Unix seconds; 0 means now.
/// out_count: optional (NULL allowed); receives the number of sessions ended.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_session_revoke_user)
public func bitsec_session_revoke_user(_ rt: OpaquePointer?, _ user: UnsafePointer<CChar>?, _ user_len: UInt,
                                       _ tenant: UnsafePointer<CChar>?, _ tenant_len: UInt, _ at: Int64,
                                       _ out_count: UnsafeMutablePointer<Int64>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        guard at >= 0 else { throw .invalid("at must be >= 0") }
        let s = try r.require(r.sessions)
        let n = try s.revokeUser(user: try sessionUser(user, user_len),
                                 tenant: try sessionText(tenant, tenant_len, "tenant", max: SessionRecord.maxTenantBytes), at: at)
        out_count?.pointee = Int64(n)
    }
}

/// Lists the live sessions of a user (an account page, a GDPR export), oldest first, as a
/// JSON array of the objects bitsec_session_validate writes. Tokens are never listed.
///
/// rt: the runtime (sessions section).
/// user, user_len, tenant, tenant_len: as bitsec_session_create.
/// at: the instant, Unix seconds; 0 means now.
/// out, out_cap, out_len: caller-owned buffer for the JSON; with out NULL or out_cap too
/// small, BITSEC_E_BUFFER_TOO_SMALL and *out_len the size needed.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_TOO_LARGE; BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_session_list)
public func bitsec_session_list(_ rt: OpaquePointer?, _ user: UnsafePointer<CChar>?, _ user_len: UInt,
                                _ tenant: UnsafePointer<CChar>?, _ tenant_len: UInt, _ at: Int64,
                                _ out: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        guard at >= 0 else { throw .invalid("at must be >= 0") }
        let s = try r.require(r.sessions)
        let list = try s.list(user: try sessionUser(user, user_len),
                              tenant: try sessionText(tenant, tenant_len, "tenant", max: SessionRecord.maxTenantBytes), at: at)
        var w = JSONWriter(reserving: 64 + 256 * list.count)
        w.raw("[")
        for (i, e) in list.enumerated() {
            if i > 0 { w.raw(",") }
            SessionService.json(id: e.id, e.record, into: &w)
        }
        w.raw("]")
        try writeOutput(w.bytes, out, out_cap, out_len)
    }
}
