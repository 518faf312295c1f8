// Tokens: JWS/JWT verification, issuing, revocation and key reloads (issue 3).
internal import BitsecCore
internal import Glibc

/// Verifies a compact JWS/JWT token: size, header, key (by kid, pinned algorithm),
/// signature, then the claims (exp, nbf, iat with the leeway, issuer, audience, required
/// claims, typ, crit) and the jti revocation list, at instant at. An invalid token is a
/// decision: the call returns BITSEC_OK and *out_reason says why.
///
/// rt: the runtime (its configuration must have a tokens section).
/// token, token_len: the token text (not necessarily NUL-terminated); caller-owned, only
/// read during the call. Longer than the configured max_token_bytes gives the reason
/// BITSEC_TOKEN_TOO_LARGE without decoding anything.
/// at: Unix seconds to evaluate time claims at (exactly that second: a fractional nbf or iat
/// after it is not yet valid); 0 means now, read with nanosecond precision. For a
/// sub-second explicit instant use bitsec_verify_token_at.
/// out_reason: receives BITSEC_TOKEN_VALID (0) or a BITSEC_TOKEN_* reason code.
/// out_buf, out_cap: caller-owned buffer for the result of a valid token, a JSON object
/// {"sub","roles","scope","tenant_id","department","jti","exp","claims"}: the fields services
/// use on every request and the claims exactly as signed. sub, jti: strings, null when
/// absent; roles: role then roles, an array (empty when absent); scope: the first of scope
/// (split on spaces), scopes, scp that the token carries, an array; null when it carries
/// none (an empty array when the claim is empty); tenant_id: tenant_id, else tenant;
/// department: a string or null; exp: whole seconds (a fraction rounded up, so that
/// bitsec_token_revoke with it covers the token's whole life), null when absent. The document can be passed as it is to bitsec_check_permission_claims, which
/// then decides as for the token's own claims (a token without scope is judged by its roles
/// alone). Only sub (not user_id) names the principal in the document.
/// NUL-terminated when there is room. May be NULL with out_cap 0: the decision alone, and
/// *out_len the size the document needs (the size query; a deciding call answers it with
/// BITSEC_OK, as it has since 0.1.0: see CONVENTIONS).
/// out_len: receives the result's length (0 for an invalid token).
/// Returns BITSEC_OK (decision in *out_reason; for a valid token the document was written,
/// or only its size when out_buf is NULL and out_cap 0); BITSEC_E_BUFFER_TOO_SMALL (valid
/// token, out_cap too small but not 0: *out_len holds the size needed, *out_reason is valid,
/// nothing else is written);
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE (token_len over BITSEC_MAX_ARGUMENT_BYTES);
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_BACKEND_UNAVAILABLE (revocations in Redis and Redis
/// unreachable: no decision); BITSEC_E_CLOSED.
/// Thread safety: safe from any thread, concurrently with bitsec_token_keys_reload.
/// Since: 0.1.0
@c(bitsec_verify_token)
public func bitsec_verify_token(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ at: Int64,
                                _ out_reason: UnsafeMutablePointer<Int32>?, _ out_buf: UnsafeMutablePointer<CChar>?,
                                _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt, timed: .tokenVerify) { (r) throws(BitsecError) in
        guard let out_reason, let out_len else { throw .invalid("out_reason and out_len are required") }
        out_len.pointee = 0
        let n = try sizeArg(token_len, "token_len")
        let bytes = try bytesArg(UnsafeRawPointer(token), n, "token")
        let v = try r.require(r.tokens).verify(bytes, at: at)
        out_reason.pointee = v.reason.rawValue
        guard v.reason == .valid, let c = v.claims else { return }
        try writeDecisionDocument(c.result, out_buf, out_cap, out_len)
    }
}

/// As bitsec_verify_token, at an instant with sub-second precision: at_sec whole Unix
/// seconds plus at_nsec nanoseconds (at_sec 0 or negative: now, read from the clock with
/// nanosecond precision, as bitsec_verify_token does with at 0). The time claims are
/// compared to the nanosecond: with the leeway L, a token is valid while now < exp + L, and
/// from nbf - L and iat - L on; a fractional exp is never rounded later, a fractional nbf or
/// iat never earlier. Use it when the caller's clock has sub-second precision (Python's
/// time.time()); bitsec_verify_token(at) equals this function with at_nsec 0.
///
/// rt, token, token_len, out_reason, out_buf, out_cap, out_len: as bitsec_verify_token.
/// at_sec: Unix seconds; 0 (or negative) means now.
/// at_nsec: nanoseconds after at_sec, 0 to 999999999 (ignored when at_sec means now).
/// Returns as bitsec_verify_token, and BITSEC_E_INVALID_ARGUMENT for at_nsec out of range.
/// Thread safety: safe from any thread, concurrently with bitsec_token_keys_reload.
/// Since: 0.2.0
@c(bitsec_verify_token_at)
public func bitsec_verify_token_at(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ at_sec: Int64,
                                   _ at_nsec: Int32, _ out_reason: UnsafeMutablePointer<Int32>?,
                                   _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                   _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt, timed: .tokenVerify) { (r) throws(BitsecError) in
        guard let out_reason, let out_len else { throw .invalid("out_reason and out_len are required") }
        out_len.pointee = 0
        guard at_nsec >= 0, at_nsec < 1_000_000_000 else { throw .invalid("at_nsec must be 0 to 999999999") }
        let n = try sizeArg(token_len, "token_len")
        let bytes = try bytesArg(UnsafeRawPointer(token), n, "token")
        let v = try r.require(r.tokens).verify(bytes, instant: Clock.resolveInstant(at_sec, nanoseconds: at_nsec))
        out_reason.pointee = v.reason.rawValue
        guard v.reason == .valid, let c = v.claims else { return }
        try writeDecisionDocument(c.result, out_buf, out_cap, out_len)
    }
}

/// The stable name of a BITSEC_TOKEN_* reason code ("valid", "expired", "bad_signature", ...).
///
/// reason: any value; unknown codes give "unknown".
/// Returns a static NUL-terminated string; never free it.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_token_reason_name)
public func bitsec_token_reason_name(_ reason: Int32) -> UnsafePointer<CChar> {
    let text: StaticString = TokenReason(rawValue: reason)?.name ?? "unknown"
    return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Signs claims into a compact JWS: header {"alg","typ":"JWT","kid"}, the claims bytes as
/// the payload (no claim is added), signed with the key's pinned algorithm.
///
/// claims, claims_len: a JSON object, UTF-8; caller-owned. At most max_token_bytes.
/// kid, kid_len: the signing key's kid; NULL or empty for tokens.issuing.kid, or the only
/// key able to sign.
/// out_buf, out_cap, out_len: receives the token (ASCII, NUL-terminated when there is room).
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed);
/// BITSEC_E_MALFORMED (claims not JSON); BITSEC_E_INVALID_ARGUMENT (not an object, key
/// cannot sign, several keys and no kid); BITSEC_E_NOT_FOUND (no key with that kid);
/// BITSEC_E_TOO_LARGE; BITSEC_E_CRYPTO; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_token_sign)
public func bitsec_token_sign(_ rt: OpaquePointer?, _ claims: UnsafePointer<CChar>?, _ claims_len: UInt,
                              _ kid: UnsafePointer<CChar>?, _ kid_len: UInt, _ out_buf: UnsafeMutablePointer<CChar>?,
                              _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt, timed: .tokenSign) { (r) throws(BitsecError) in
        let t = try r.require(r.tokens)
        let bytes = try bytesArg(UnsafeRawPointer(claims), claims_len, "claims", lengthName: "claims_len")
        let k = try optionalText(kid, kid_len, "kid")
        try writeOutput(try t.sign(claims: bytes, kid: k), out_buf, out_cap, out_len)
    }
}

/// Issues an access token and a refresh token for the given claims (sub, role, scope,
/// tenant_id, session_id, ...): both get iat, exp (tokens.issuing access_ttl_seconds,
/// default 1800, and refresh_ttl_seconds, default 604800), a random jti, "type" ("access" or
/// "refresh"), the same session_id (given, or random), and iss/aud from tokens.issuing when
/// the claims have none.
///
/// claims, claims_len: a JSON object without exp, iat, nbf, jti or type; caller-owned.
/// kid, kid_len: as for bitsec_token_sign.
/// at: Unix seconds for iat (0 = now).
/// out_buf, out_cap, out_len: receives {"access_token","refresh_token","token_type":"Bearer",
/// "expires_in","refresh_expires_in","session_id"}.
/// Returns as bitsec_token_sign.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_token_issue_pair)
public func bitsec_token_issue_pair(_ rt: OpaquePointer?, _ claims: UnsafePointer<CChar>?, _ claims_len: UInt,
                                    _ kid: UnsafePointer<CChar>?, _ kid_len: UInt, _ at: Int64,
                                    _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                    _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt, timed: .tokenSign) { (r) throws(BitsecError) in
        let t = try r.require(r.tokens)
        let bytes = try bytesArg(UnsafeRawPointer(claims), claims_len, "claims", lengthName: "claims_len")
        let k = try optionalText(kid, kid_len, "kid")
        try writeOutput(try t.issuePair(claims: bytes, kid: k, at: at), out_buf, out_cap, out_len)
    }
}

/// Exchanges a refresh token for a new pair and revokes it (set-if-absent: of concurrent
/// exchanges of one refresh token, exactly one succeeds). The refresh token is verified as
/// by bitsec_verify_token, and must carry "type": "refresh" and a jti. A refresh token
/// presented again after its exchange (or after its revocation) was copied: besides
/// BITSEC_TOKEN_REVOKED, its whole family is revoked (every access and refresh token with its
/// session_id and sub issued until now, the pair its exchange issued included, and the
/// sessions-section session of that id) and a "security_incident"/"refresh_token_reused"
/// audit event is emitted (RFC 9700 section 4.14.2; since 0.3.0).
///
/// token, token_len: the refresh token; caller-owned.
/// kid, kid_len: the key for the new pair, as for bitsec_token_sign.
/// at: Unix seconds (0 = now).
/// out_reason: receives BITSEC_TOKEN_VALID or why the refresh token was refused
/// (BITSEC_TOKEN_REVOKED when it was already used, BITSEC_TOKEN_WRONG_TYPE for an access
/// token, ...).
/// out_buf, out_cap, out_len: receives the new pair as bitsec_token_issue_pair (nothing, and
/// *out_len 0, when refused).
/// Returns BITSEC_OK (decision in *out_reason); BITSEC_E_BUFFER_TOO_SMALL (out_cap below
/// 3 * max_token_bytes + 256, checked before anything is verified or revoked; *out_len holds
/// that size); BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED; BITSEC_E_CRYPTO.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_token_refresh)
public func bitsec_token_refresh(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt,
                                 _ kid: UnsafePointer<CChar>?, _ kid_len: UInt, _ at: Int64,
                                 _ out_reason: UnsafeMutablePointer<Int32>?, _ out_buf: UnsafeMutablePointer<CChar>?,
                                 _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        guard let out_reason, let out_len else { throw .invalid("out_reason and out_len are required") }
        out_len.pointee = 0
        let t = try r.require(r.tokens)
        let bytes = try bytesArg(UnsafeRawPointer(token), token_len, "token", lengthName: "token_len")
        let k = try optionalText(kid, kid_len, "kid")
        // Checked before the exchange: once the old token is revoked, a retry cannot succeed.
        let needed = 3 * t.policy.maxTokenBytes + 256
        guard out_buf != nil, out_cap >= UInt(needed) else {
            out_len.pointee = UInt(needed)
            throw BitsecError(.bufferTooSmall, "out_cap must be at least 3 * max_token_bytes + 256 = \(needed)")
        }
        let res = try t.refresh(bytes, kid: k, at: at)
        out_reason.pointee = res.reason.rawValue
        if let pair = res.pair { try writeOutput(pair, out_buf, out_cap, out_len) }
    }
}

/// Revokes a bare jti: every token carrying it verifies as BITSEC_TOKEN_REVOKED until exp
/// plus the leeway (then it is expired anyway and the entry is dropped). In Redis when the
/// runtime has a redis section (shared by every instance), in process otherwise. Only the
/// jti is known here: in Redis the revocation is stored under the jti's own key, which every
/// verification of a token with that jti also checks (in the same round trip as the
/// subject's keys). Prefer bitsec_token_revoke_token when the token is at hand: it also
/// knows its session, which it revokes instead when a table is full. In process, when tokens.revocation.max_entries live jtis are
/// recorded, the call does not fail: every token issued up to now is revoked instead (fail
/// closed; see bitsec_token_revoke_token for the narrower escalation).
///
/// jti, jti_len: the token's jti, 1 to 512 bytes of UTF-8; caller-owned.
/// exp: the token's exp (Unix seconds); 0 when unknown: then now + refresh_ttl_seconds.
/// at: Unix seconds (0 = now).
/// out_newly: optional; receives 1 when newly revoked, 0 when it already was (or when exp
/// plus the leeway is already past: nothing to remember).
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_BACKEND_UNAVAILABLE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_token_revoke)
public func bitsec_token_revoke(_ rt: OpaquePointer?, _ jti: UnsafePointer<CChar>?, _ jti_len: UInt, _ exp: Int64,
                                _ at: Int64, _ out_newly: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let t = try r.require(r.tokens)
        let j = try textArg(jti, jti_len, "jti", max: 512)
        let newly = try t.revoke(jti: j, exp: exp, at: at)
        store(out_newly, newly ? 1 : 0)
    }
}

/// Revokes one token given as text: it is verified first (signature, time claims, issuer,
/// audience; any "type"), then its jti is revoked until its exp plus the leeway, stored with
/// its subject (in Redis: in the sub's cluster slot, so one verification is one round trip).
/// When the in-process table of single jtis is full (tokens.revocation.max_entries), the
/// call does not fail: the token's session (its sub and session_id) is revoked at the
/// token's iat instead, else its subject, else every token issued up to that iat: wider than
/// asked, never narrower.
///
/// token, token_len: the token text; caller-owned, only read during the call.
/// at: Unix seconds (0 = now).
/// out_reason: receives BITSEC_TOKEN_VALID when the token was valid and is now revoked,
/// BITSEC_TOKEN_REVOKED or BITSEC_TOKEN_EXPIRED when there was nothing to do, any other
/// BITSEC_TOKEN_* reason when the token was refused (nothing is revoked then).
/// out_newly: optional; receives 1 when this call recorded the revocation, 0 otherwise.
/// Returns BITSEC_OK (outcome in *out_reason); BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE
/// (token_len over BITSEC_MAX_ARGUMENT_BYTES); BITSEC_E_BACKEND_UNAVAILABLE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_token_revoke_token)
public func bitsec_token_revoke_token(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ at: Int64,
                                      _ out_reason: UnsafeMutablePointer<Int32>?, _ out_newly: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_reason = try requiredOut(out_reason, "out_reason")
        let t = try r.require(r.tokens)
        let n = try sizeArg(token_len, "token_len")
        let bytes = try bytesArg(UnsafeRawPointer(token), n, "token")
        let (reason, newly) = try t.revoke(token: bytes, at: at)
        out_reason.pointee = reason.rawValue
        store(out_newly, newly ? 1 : 0)
    }
}

/// Revokes a session: every token whose sub and session_id claims are these and whose iat
/// is at or before at (the whole second of at included: iat has a granularity of one
/// second; a token without iat is revoked too) verifies as BITSEC_TOKEN_REVOKED. Tokens
/// issued later in the same session (in a later second) stay valid. The revocation lasts
/// until every token of the session issued up to then has expired: at + the longer of
/// access_ttl_seconds and refresh_ttl_seconds + the leeway. In process, when
/// tokens.revocation.max_sessions live sessions are recorded, the subject is revoked instead,
/// in every tenant since this call does not know the session's (then, when max_subjects is
/// reached too, every token issued up to at): wider, never narrower, never an error.
/// (Revoking one of the session's tokens, bitsec_token_revoke_token, or ending a server-side
/// session, widens within the tenant.)
///
/// session_id, session_id_len: the session_id claim, 1 to 512 bytes of UTF-8; caller-owned.
/// subject, subject_len: the sub claim of the session's tokens, 1 to 512 bytes of UTF-8.
/// at: Unix seconds (0 = now).
/// out_newly: optional; receives 1 when this moved the session's revocation forward, 0 when
/// an equal or later one was already recorded.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_token_revoke_session)
public func bitsec_token_revoke_session(_ rt: OpaquePointer?, _ session_id: UnsafePointer<CChar>?, _ session_id_len: UInt,
                                        _ subject: UnsafePointer<CChar>?, _ subject_len: UInt, _ at: Int64,
                                        _ out_newly: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let t = try r.require(r.tokens)
        let sid = try textArg(session_id, session_id_len, "session_id", max: 512)
        let sub = try textArg(subject, subject_len, "subject", max: 512)
        store(out_newly, try t.revokeSession(sid, subject: sub, at: at) ? 1 : 0)
    }
}

/// Revokes a subject: every token whose sub claim is this and whose iat is at or before
/// not_before (that whole second included; a token without iat is revoked too) verifies as
/// BITSEC_TOKEN_REVOKED, in every tenant (bitsec_token_revoke_subject_in_tenant revokes one
/// tenant's). Used when an account is disabled, deleted or anonymised, or all its
/// sessions must end. Lasts until every token issued up to then has expired (not_before +
/// the longer of access_ttl_seconds and refresh_ttl_seconds + the leeway). In process, when
/// tokens.revocation.max_subjects live subjects are recorded, every token issued up to
/// not_before is revoked instead: wider, never narrower, never an error.
///
/// subject, subject_len: the sub claim, 1 to 512 bytes of UTF-8; caller-owned.
/// not_before: Unix seconds; 0 means at.
/// at: Unix seconds (0 = now).
/// out_newly: optional; receives 1 when this moved the subject's epoch forward.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_token_revoke_subject)
public func bitsec_token_revoke_subject(_ rt: OpaquePointer?, _ subject: UnsafePointer<CChar>?, _ subject_len: UInt,
                                        _ not_before: Int64, _ at: Int64, _ out_newly: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let t = try r.require(r.tokens)
        let sub = try textArg(subject, subject_len, "subject", max: 512)
        store(out_newly, try t.revokeSubject(sub, notBefore: not_before, at: at) ? 1 : 0)
    }
}

/// bitsec_token_revoke_subject for one tenant's subject: every token with that sub whose
/// tenant (its tenant_id claim, else tenant) is tenant, issued at or before not_before,
/// becomes BITSEC_TOKEN_REVOKED; the same subject in other tenants is untouched (where user
/// names are only unique within a tenant, one tenant's revocation must not end another's
/// namesake's sessions). bitsec_token_revoke_subject, without a tenant, revokes the subject
/// in every tenant. Revoking a token that has neither jti nor session_id
/// (bitsec_token_revoke_token) revokes its subject in its own tenant, the same way.
///
/// subject, subject_len: the sub claim, 1 to 512 bytes of UTF-8; caller-owned.
/// tenant, tenant_len: the tenant, 1 to 512 bytes of UTF-8; caller-owned.
/// not_before, at, out_newly: as bitsec_token_revoke_subject.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE;
/// BITSEC_E_BACKEND_UNAVAILABLE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.3.0
@c(bitsec_token_revoke_subject_in_tenant)
public func bitsec_token_revoke_subject_in_tenant(_ rt: OpaquePointer?, _ subject: UnsafePointer<CChar>?, _ subject_len: UInt,
                                                  _ tenant: UnsafePointer<CChar>?, _ tenant_len: UInt, _ not_before: Int64,
                                                  _ at: Int64, _ out_newly: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let t = try r.require(r.tokens)
        let sub = try textArg(subject, subject_len, "subject", max: 512)
        let ten = try textArg(tenant, tenant_len, "tenant", max: 512)
        store(out_newly, try t.revokeSubject(sub, tenant: ten, notBefore: not_before, at: at) ? 1 : 0)
    }
}

/// Whether a bare jti is revoked at instant at (as recorded by bitsec_token_revoke; in
/// Redis that is the place of tokens without a sub claim). Session and subject revocations
/// and jtis revoked with their subject are seen by bitsec_verify_token, which checks all.
///
/// jti, jti_len: 1 to 512 bytes of UTF-8; caller-owned.
/// at: Unix seconds (0 = now).
/// out_revoked: receives 1 or 0.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_BACKEND_UNAVAILABLE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_token_is_revoked)
public func bitsec_token_is_revoked(_ rt: OpaquePointer?, _ jti: UnsafePointer<CChar>?, _ jti_len: UInt, _ at: Int64,
                                    _ out_revoked: UnsafeMutablePointer<Int32>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let out_revoked = try requiredOut(out_revoked, "out_revoked")
        let t = try r.require(r.tokens)
        let j = try textArg(jti, jti_len, "jti", max: 512)
        guard !j.isEmpty else { throw .invalid("jti is empty") }
        out_revoked.pointee = try t.isRevoked(jti: j, at: at) ? 1 : 0
    }
}

/// Replaces the runtime's JWK Set keys (those of tokens.jwks and earlier reloads; the keys
/// of tokens.keys stay) with the keys of a JWK Set document, atomically: verifications in
/// flight finish with the old set, later ones use the new one. Clears the verified-token
/// cache. With a host store region (store.host), every process of the host that uses the
/// region applies the same set at its next call. On any error nothing changes. Keys with
/// "use" other than "sig" are skipped; every
/// other key must be valid (alg supported, RSA >= 2048 bits, HMAC secret >= hash size).
///
/// Following a JWKS URL from C: bitsec never fetches anything itself. Fetch the set over
/// https (bound the response size), call this function with the body, and fetch again on a
/// timer (e.g. every hour) and when bitsec_verify_token refuses a token with
/// BITSEC_TOKEN_UNKNOWN_KID (a key rotation): at most once per cooldown (e.g. a minute)
/// for the whole process, so that tokens with invented kids cannot make every request
/// fetch; after a reload, verify that token once more. When a fetch fails, do not call
/// this function: the last good set stays. Reload only when the set changed: each call
/// records a keys_reloaded audit event.
///
/// jwks, jwks_len: the JWK Set JSON ({"keys": [...]}), at most BITSEC_MAX_CONFIG_BYTES;
/// caller-owned.
/// Returns BITSEC_OK; BITSEC_E_CONFIG (invalid set; the detail names the key and member);
/// BITSEC_E_TOO_LARGE; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread, concurrently with verifications.
/// Since: 0.1.0
@c(bitsec_token_keys_reload)
public func bitsec_token_keys_reload(_ rt: OpaquePointer?, _ jwks: UnsafePointer<CChar>?, _ jwks_len: UInt) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        _ = try r.require(r.tokens)
        let n = try sizeArg(jwks_len, "jwks_len", max: Limits.maxConfigBytes)
        try r.reloadTokenKeys(try bytesArg(UnsafeRawPointer(jwks), n, "jwks", max: Limits.maxConfigBytes))
    }
}

/// The verify calls' output: their result is the decision, the document an option. NULL with
/// out_cap 0 asks for the decision alone and gets the document's size in *out_len with
/// BITSEC_OK (the answer since 0.1.0, kept within ABI version 1); any other too-small buffer
/// follows the size-query convention (BITSEC_E_BUFFER_TOO_SMALL, the size needed).
@inline(__always)
private func writeDecisionDocument(_ doc: [UInt8], _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                   _ out_len: UnsafeMutablePointer<UInt>) throws(BitsecError) {
    if out_buf == nil && out_cap == 0 {
        out_len.pointee = UInt(doc.count)
        return
    }
    try writeOutput(doc, out_buf, out_cap, out_len)
}

/// Generates a new private signing key for the tokens section, from OpenSSL's generator, as
/// unencrypted PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"), the form a tokens key's "pem"
/// reads. Takes no runtime: for key-provisioning tools (the bitsec command line).
///
/// type, type_len: the key type, one of "RSA-2048", "RSA-3072", "RSA-4096" (RS256/PS256
/// and stronger), "P-256" (ES256), "P-384" (ES384), "P-521" (ES512), "Ed25519" (EdDSA);
/// caller-owned, at most 16 bytes.
/// out_buf, out_cap: caller-owned buffer (8192 bytes hold any of these keys, NUL included).
/// out_len: receives the PEM's length (a NUL follows when there is room), also when the
/// buffer is too small; a size query generates a key it then discards.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT (unknown type, NULL, invalid UTF-8);
/// BITSEC_E_TOO_LARGE (type longer than 16 bytes); BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_CRYPTO.
/// The output is a private key: write it to a file only its owner can read, and wipe the
/// buffer. RSA-4096 takes up to seconds.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.3.0
@c(bitsec_token_key_generate)
public func bitsec_token_key_generate(_ type: UnsafePointer<CChar>?, _ type_len: UInt, _ out_buf: UnsafeMutablePointer<CChar>?,
                                      _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        guard out_len != nil else { throw .invalid("out_len is NULL") }
        let name = try textArg(type, type_len, "type", max: 16)
        var pem = try KeyTool.generate(name)
        defer { wipe(&pem) }
        try writeOutput(pem, out_buf, out_cap, out_len)
    }
}

/// The public JWK (RFC 7517) of a PEM key, in the RFC 7638 canonical form: only the
/// required members, in lexicographic order, without whitespace (so the SHA-256 of the
/// output is the key's JWK thumbprint). RSA: {"e","kty","n"}; EC: {"crv","kty","x","y"};
/// Ed25519: {"crv","kty","x"}. Never contains private members. Takes no runtime.
///
/// pem, pem_len: a PEM "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY" (unencrypted),
/// "PUBLIC KEY" or "CERTIFICATE" (its subject key); caller-owned, at most 65536 bytes.
/// out_buf, out_cap: caller-owned buffer (1024 bytes hold the JWK of an RSA-4096 key).
/// out_len: receives the JSON's length (a NUL follows when there is room), also when the
/// buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_MALFORMED (not a PEM key, encrypted private key);
/// BITSEC_E_UNSUPPORTED (a key type or curve tokens cannot use); BITSEC_E_INVALID_ARGUMENT
/// (NULL); BITSEC_E_TOO_LARGE; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_CRYPTO.
/// Thread safety: safe from any thread; needs no runtime.
/// Since: 0.3.0
@c(bitsec_token_key_public_jwk)
public func bitsec_token_key_public_jwk(_ pem: UnsafePointer<CChar>?, _ pem_len: UInt, _ out_buf: UnsafeMutablePointer<CChar>?,
                                        _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        guard out_len != nil else { throw .invalid("out_len is NULL") }
        let raw = try boundedBytesArg(pem, pem_len, "pem", max: KeyTool.maxPEMBytes)
        try writeOutput(try KeyTool.publicJWK(pem: raw), out_buf, out_cap, out_len)
    }
}
