// The constants of the C ABI, each declared once: status codes, decision reasons, flags,
// limits and fixed sizes. tools/gen_abi.py (run by `make header`) writes them into the
// generated sections of include/bitsec.h and into bindings/python/src/bitsec/_abi.py;
// `make check-generated` fails when either differs from this file.
//
// The format is read by a machine, keep it strict:
//   `// MARK: family <id> -- <title>` starts a family (one generated section of bitsec.h);
//   `//: text` lines are a comment printed before the next constant;
//   a constant is one line `public static let BITSEC_<NAME>: <Int32|UInt32|Int64|StaticString> = <value>`,
//   optionally followed by `// comment`; <value> is an integer, a product/sum of integers and
//   earlier constants, or a string literal. UInt32 constants get a `u` suffix in C.
// The version (BITSEC_VERSION_*, BITSEC_ABI_VERSION) is declared in BitsecCore's Version.swift.

import BitsecCore

/// The C ABI's constants under their C names (as in include/bitsec.h).
public enum BitsecABI {
    // MARK: family runtime -- Runtime: status codes and limits
    //: Status codes (int32_t). Stable: never renumbered; new codes may be added.
    public static let BITSEC_OK: Int32 = 0
    public static let BITSEC_E_INVALID_ARGUMENT: Int32 = 1 // NULL where required, bad length, invalid UTF-8
    public static let BITSEC_E_CONFIG: Int32 = 2 // configuration invalid; detail names the field
    public static let BITSEC_E_NOT_CONFIGURED: Int32 = 3 // the operation's configuration section is absent
    public static let BITSEC_E_BUFFER_TOO_SMALL: Int32 = 4 // *out_len holds the size needed
    public static let BITSEC_E_BACKEND_UNAVAILABLE: Int32 = 5 // Redis down, refused, or no answer in time
    public static let BITSEC_E_CRYPTO: Int32 = 6 // OpenSSL reported a failure
    public static let BITSEC_E_CLOSED: Int32 = 7 // the handle was closed
    public static let BITSEC_E_TOO_LARGE: Int32 = 8 // an input exceeds a documented limit
    public static let BITSEC_E_MALFORMED: Int32 = 9 // an input could not be parsed
    public static let BITSEC_E_IO: Int32 = 10 // a file could not be read or written
    public static let BITSEC_E_TIMEOUT: Int32 = 11 // a bounded wait ran out
    public static let BITSEC_E_INTERNAL: Int32 = 12 // a bug in bitsec: please report it
    public static let BITSEC_E_UNSUPPORTED: Int32 = 13 // well-formed but not supported
    public static let BITSEC_E_NOT_FOUND: Int32 = 14 // a named key, category or user does not exist
    //: Limits (bytes).
    public static let BITSEC_MAX_CONFIG_BYTES: Int32 = 4 * 1024 * 1024
    public static let BITSEC_MAX_JSON_DEPTH: Int32 = 64
    public static let BITSEC_MAX_ARGUMENT_BYTES: Int32 = 16 * 1024 * 1024
    public static let BITSEC_MAX_MESSAGE_BYTES: Int32 = 512

    // MARK: family tokens -- Tokens
    //: Reasons a token is refused (int32_t, written by bitsec_verify_token and
    //: bitsec_token_refresh through out_reason). Stable: never renumbered; new ones may be added.
    //: bitsec_token_reason_name(code) gives the name ("expired", ...).
    public static let BITSEC_TOKEN_VALID: Int32 = 0
    public static let BITSEC_TOKEN_MALFORMED: Int32 = 1 // not a compact JWS, bad base64url or JSON
    public static let BITSEC_TOKEN_TOO_LARGE: Int32 = 2 // over max_token_bytes (checked before decoding)
    public static let BITSEC_TOKEN_UNSUPPORTED_ALG: Int32 = 3 // alg unknown, or "none" in any letter case
    public static let BITSEC_TOKEN_ALG_MISMATCH: Int32 = 4 // header alg differs from the key's pinned alg
    public static let BITSEC_TOKEN_UNKNOWN_KID: Int32 = 5 // no such kid, or no kid and several keys apply
    public static let BITSEC_TOKEN_BAD_SIGNATURE: Int32 = 6
    public static let BITSEC_TOKEN_EXPIRED: Int32 = 7 // now >= exp + leeway
    public static let BITSEC_TOKEN_NOT_YET_VALID: Int32 = 8 // nbf > now + leeway
    public static let BITSEC_TOKEN_ISSUED_IN_FUTURE: Int32 = 9 // iat > now + leeway
    public static let BITSEC_TOKEN_WRONG_ISSUER: Int32 = 10
    public static let BITSEC_TOKEN_WRONG_AUDIENCE: Int32 = 11
    public static let BITSEC_TOKEN_MISSING_CLAIM: Int32 = 12 // exp, a required claim, or iss/aud when expected
    public static let BITSEC_TOKEN_INVALID_CLAIM: Int32 = 13 // a registered claim of the wrong JSON type
    public static let BITSEC_TOKEN_REVOKED: Int32 = 14 // its jti, session, subject was revoked
    public static let BITSEC_TOKEN_CRIT_UNSUPPORTED: Int32 = 15 // crit names an extension bitsec does not implement
    public static let BITSEC_TOKEN_WRONG_TYPE: Int32 = 16 // typ header mismatch, or refresh token used as access
    public static let BITSEC_TOKEN_MISSING_KID: Int32 = 17 // no kid header while tokens.require_kid is true
    //: Default of tokens.max_token_bytes; the configurable range is 256 .. 1 MiB.
    public static let BITSEC_TOKEN_MAX_BYTES_DEFAULT: Int32 = 8192
    //: Longest jti accepted by bitsec_token_revoke / bitsec_token_is_revoked; also the longest
    //: session_id and subject of bitsec_token_revoke_session / bitsec_token_revoke_subject.
    public static let BITSEC_TOKEN_MAX_JTI_BYTES: Int32 = 512

    // MARK: family permissions -- Permissions
    //: Reason codes (stable; texts from bitsec_permission_reason_name).
    public static let BITSEC_PERM_GRANTED: Int32 = 1 // "granted"
    public static let BITSEC_PERM_NO_GRANT: Int32 = 2 // "no_grant": no role of the principal grants it
    public static let BITSEC_PERM_DENIED_BY_RULE: Int32 = 3 // "denied_by_rule": a deny rule applies
    public static let BITSEC_PERM_OWNER_ONLY: Int32 = 4 // "condition_failed:owner_only"
    public static let BITSEC_PERM_DEPARTMENT: Int32 = 5 // "condition_failed:department"
    public static let BITSEC_PERM_TENANT_MISMATCH: Int32 = 6 // "tenant_mismatch"
    public static let BITSEC_PERM_SCOPE_MISSING: Int32 = 7 // "scope_missing": roles grant it, scopes do not
    public static let BITSEC_PERM_UNKNOWN_RESOURCE: Int32 = 8 // "unknown_resource"
    public static let BITSEC_PERM_UNKNOWN_ACTION: Int32 = 9 // "unknown_action"
    //: Limits.
    public static let BITSEC_MAX_PERMISSION_BYTES: Int32 = 1024 // "resource:action"
    public static let BITSEC_MAX_PRINCIPAL_BYTES: Int32 = 64 * 1024 // packed principal, context, batch list
    public static let BITSEC_MAX_PERMISSION_BATCH: Int32 = 4096 // entries per bitsec_check_permissions

    // MARK: family ratelimit -- Rate limits, brute-force counters and the login guard
    //: bitsec_rate_limit_take: limits and the layout of out_decision (int64_t[7]).
    public static let BITSEC_RATE_LIMIT_MAX_KEY_BYTES: Int32 = 512 // a caller's key (user id, IP, API key)
    public static let BITSEC_RATE_LIMIT_MAX_CATEGORY_BYTES: Int32 = 64 // a category name
    public static let BITSEC_RATE_LIMIT_DECISION_LEN: Int32 = 7
    public static let BITSEC_RATE_LIMIT_D_ALLOWED: Int32 = 0 // 1 allowed, 0 denied
    public static let BITSEC_RATE_LIMIT_D_LIMIT: Int32 = 1 // X-RateLimit-Limit: the bucket's capacity
    public static let BITSEC_RATE_LIMIT_D_REMAINING: Int32 = 2 // X-RateLimit-Remaining: whole tokens left
    public static let BITSEC_RATE_LIMIT_D_RESET_AFTER: Int32 = 3 // X-RateLimit-Reset: seconds until full
    public static let BITSEC_RATE_LIMIT_D_RETRY_AFTER: Int32 = 4 // Retry-After: >= 1 when denied, else 0
    public static let BITSEC_RATE_LIMIT_D_FLAGS: Int32 = 5 // BITSEC_RATE_LIMIT_FLAG_* bits
    public static let BITSEC_RATE_LIMIT_D_REASON: Int32 = 6 // a BITSEC_RATE_LIMIT_REASON_* code
    public static let BITSEC_RATE_LIMIT_FLAG_DEGRADED: Int32 = 1 // Redis unavailable: the failure policy decided
    public static let BITSEC_RATE_LIMIT_REASON_OK: Int32 = 0 // tokens were available
    public static let BITSEC_RATE_LIMIT_REASON_LIMITED: Int32 = 1 // the bucket did not hold cost tokens
    public static let BITSEC_RATE_LIMIT_REASON_KEY_TABLE_FULL: Int32 = 2 // in-process table at max_keys: new key refused
    public static let BITSEC_RATE_LIMIT_REASON_BACKEND_DENY: Int32 = 3 // Redis unavailable, failure_policy "deny"
    public static let BITSEC_RATE_LIMIT_REASON_BACKEND_ALLOW: Int32 = 4 // Redis unavailable, failure_policy "allow"
    //: bitsec_bruteforce_*: the layout of out_status (int64_t[6]).
    public static let BITSEC_BRUTEFORCE_STATUS_LEN: Int32 = 6
    public static let BITSEC_BRUTEFORCE_S_BLOCKED: Int32 = 0 // 1 blocked, 0 not
    public static let BITSEC_BRUTEFORCE_S_FAILURES: Int32 = 1 // failures within the window
    public static let BITSEC_BRUTEFORCE_S_REMAINING: Int32 = 2 // failures left before a block
    public static let BITSEC_BRUTEFORCE_S_BLOCKED_UNTIL: Int32 = 3 // Unix seconds; 0 when not blocked
    public static let BITSEC_BRUTEFORCE_S_RETRY_AFTER: Int32 = 4 // seconds until unblocked; 0 when not blocked
    public static let BITSEC_BRUTEFORCE_S_FLAGS: Int32 = 5 // BITSEC_BRUTEFORCE_FLAG_* bits
    public static let BITSEC_BRUTEFORCE_FLAG_DEGRADED: Int32 = 1 // Redis unavailable: the failure policy decided
    public static let BITSEC_BRUTEFORCE_FLAG_NEWLY_BLOCKED: Int32 = 2 // this call started the block
    public static let BITSEC_BRUTEFORCE_FLAG_TABLE_FULL: Int32 = 4 // in-process table full: new key reported blocked
    //: bitsec_login_guard_begin: the layout of out_decision (int64_t[8]).
    public static let BITSEC_LOGIN_GUARD_DECISION_LEN: Int32 = 8
    public static let BITSEC_LOGIN_GUARD_D_ALLOWED: Int32 = 0 // 1 allowed (already counted as a failure), 0 refused
    public static let BITSEC_LOGIN_GUARD_D_REASON: Int32 = 1 // a BITSEC_LOGIN_GUARD_REASON_* code
    public static let BITSEC_LOGIN_GUARD_D_REFUSED_BY: Int32 = 2 // a BITSEC_LOGIN_GUARD_KEY_* value
    public static let BITSEC_LOGIN_GUARD_D_RETRY_AFTER: Int32 = 3 // Retry-After: >= 1 when refused, else 0
    public static let BITSEC_LOGIN_GUARD_D_REMAINING: Int32 = 4 // failures the client may still make
    public static let BITSEC_LOGIN_GUARD_D_FAILURE_RETRY_AFTER: Int32 = 5 // the wait if this attempt fails (0: none)
    public static let BITSEC_LOGIN_GUARD_D_TICKET: Int32 = 6 // the reservation, for _succeeded/_cancel
    public static let BITSEC_LOGIN_GUARD_D_FLAGS: Int32 = 7 // BITSEC_LOGIN_GUARD_FLAG_* bits
    public static let BITSEC_LOGIN_GUARD_KEY_NONE: Int32 = 0
    public static let BITSEC_LOGIN_GUARD_KEY_CLIENT: Int32 = 1
    public static let BITSEC_LOGIN_GUARD_KEY_ACCOUNT: Int32 = 2
    public static let BITSEC_LOGIN_GUARD_MAX_ACCOUNT_BYTES: Int32 = 4096 // an account name as typed: folded first, hashed when its fold is 512 bytes or more
    public static let BITSEC_LOGIN_GUARD_REASON_OK: Int32 = 0
    public static let BITSEC_LOGIN_GUARD_REASON_CLIENT_BLOCKED: Int32 = 1 // the client's address group is blocked
    public static let BITSEC_LOGIN_GUARD_REASON_ACCOUNT_BACKOFF: Int32 = 2 // the account's next attempt must wait
    public static let BITSEC_LOGIN_GUARD_REASON_ACCOUNT_LIMIT: Int32 = 3 // the account reached max_failures in its window
    public static let BITSEC_LOGIN_GUARD_REASON_TABLE_FULL: Int32 = 4 // in-process table full: new key refused
    public static let BITSEC_LOGIN_GUARD_REASON_BACKEND_DENY: Int32 = 5 // Redis unavailable, failure_policy "deny"
    public static let BITSEC_LOGIN_GUARD_FLAG_DEGRADED: Int32 = 1 // Redis unavailable: the failure policy decided
    public static let BITSEC_LOGIN_GUARD_FLAG_NEWLY_BLOCKED: Int32 = 2 // this call started a block or back-off
    public static let BITSEC_LOGIN_GUARD_FLAG_TABLE_FULL: Int32 = 4

    // MARK: family mfa -- MFA: TOTP, HOTP and backup codes
    //: Decisions of bitsec_totp_verify, bitsec_totp_check, bitsec_hotp_check and
    //: bitsec_backup_code_verify (written through out_reason; the call itself returns BITSEC_OK).
    public static let BITSEC_TOTP_OK: Int32 = 0 // accepted
    public static let BITSEC_TOTP_WRONG_CODE: Int32 = 1 // well-formed, matches no step of the window
    public static let BITSEC_TOTP_REPLAYED: Int32 = 2 // right code, but its step (or backup code) was already used
    public static let BITSEC_TOTP_THROTTLED: Int32 = 3 // too many failures for this user; see out_retry_after
    public static let BITSEC_TOTP_MALFORMED_CODE: Int32 = 4 // not exactly `digits` ASCII digits (or not a backup code)
    //: HMAC algorithms.
    public static let BITSEC_OTP_SHA1: Int32 = 0
    public static let BITSEC_OTP_SHA256: Int32 = 1
    public static let BITSEC_OTP_SHA512: Int32 = 2
    //: Limits.
    public static let BITSEC_TOTP_MIN_DIGITS: Int32 = 6
    public static let BITSEC_TOTP_MAX_DIGITS: Int32 = 8
    public static let BITSEC_TOTP_MAX_WINDOW: Int32 = 10
    public static let BITSEC_TOTP_MAX_PERIOD: Int32 = 86400
    public static let BITSEC_TOTP_MAX_SECRET_TEXT_BYTES: Int32 = 256 // base32 text of a secret
    public static let BITSEC_TOTP_MIN_SECRET_BITS: Int32 = 80 // shortest secret verified (runtime: min_secret_bits)
    public static let BITSEC_TOTP_MIN_NEW_SECRET_BITS: Int32 = 128 // shortest secret generated
    public static let BITSEC_TOTP_DEFAULT_SECRET_BITS: Int32 = 160
    public static let BITSEC_TOTP_MAX_NEW_SECRET_BITS: Int32 = 512
    public static let BITSEC_TOTP_MAX_CODE_BYTES: Int32 = 256
    public static let BITSEC_TOTP_MAX_USER_BYTES: Int32 = 256
    public static let BITSEC_TOTP_MAX_BACKUP_CODES: Int32 = 64
    public static let BITSEC_TOTP_MAX_SEALED_SECRET_BYTES: Int32 = 512 // output of bitsec_totp_secret_seal, input of bitsec_totp_verify_sealed
    public static let BITSEC_TOTP_SEALED_SECRET_CONTEXT_PREFIX: StaticString = "bitsec.totp.secret|" // fields context: prefix + user

    // MARK: family fields -- Field encryption
    //: Flags and limits of bitsec_encrypt_field / bitsec_decrypt_field (docs/fields.md).
    public static let BITSEC_FIELD_BINARY: UInt32 = 1 // flag: binary output instead of text
    public static let BITSEC_FIELD_DETERMINISTIC: UInt32 = 2 // flag: AES-SIV, equal inputs give equal tokens
    public static let BITSEC_FIELD_MAX_PLAINTEXT: Int32 = 1024 * 1024 // bytes of a plaintext
    public static let BITSEC_FIELD_MAX_CONTEXT: Int32 = 4096 // bytes of a context
    public static let BITSEC_FIELD_MAX_KEY_ID: Int32 = 32 // bytes of a key id
    public static let BITSEC_FIELD_MAX_TOKEN: Int32 = 1398190 // bytes of a token (text form, largest plaintext)
    public static let BITSEC_FERNET_MAX_TOKEN: Int32 = 1398200 // bytes of a Fernet token (largest plaintext)
    public static let BITSEC_FERNET_NO_TTL: Int32 = -1 // ttl of bitsec_fernet_decrypt_ttl/_migrate_ttl: no limit
    //: Decisions of bitsec_decrypt_field, bitsec_field_rewrap and the Fernet functions (*out_reason).
    public static let BITSEC_FIELD_REASON_OK: Int32 = 0
    public static let BITSEC_FIELD_REASON_MALFORMED: Int32 = 1 // not a token: encoding, truncation, version
    public static let BITSEC_FIELD_REASON_TAMPERED: Int32 = 2 // the tag/MAC does not verify: bytes were altered
    public static let BITSEC_FIELD_REASON_WRONG_CONTEXT: Int32 = 3 // the token belongs to another context
    public static let BITSEC_FIELD_REASON_UNKNOWN_KEY: Int32 = 4 // its key id is not in the keyring
    public static let BITSEC_FIELD_REASON_RETIRED_KEY: Int32 = 5 // its key is retired: rewrap before retiring
    public static let BITSEC_FIELD_REASON_EXPIRED: Int32 = 6 // Fernet: older than the TTL
    public static let BITSEC_FIELD_REASON_NOT_YET_VALID: Int32 = 7 // Fernet: timestamp too far in the future

    // MARK: family audit -- Audit and metrics
    //: bitsec_audit_emit: limits. An event up to BITSEC_AUDIT_MAX_EVENT_BYTES is read; longer text
    //: members and details beyond the section's max_event_bytes are cut down (listed in the record's
    //: "truncated"), not refused. max_depth may be lower than BITSEC_AUDIT_MAX_DEPTH.
    public static let BITSEC_AUDIT_MAX_EVENT_BYTES: Int32 = 1024 * 1024 // events read; ceiling of max_event_bytes (default 16 KiB)
    public static let BITSEC_AUDIT_MAX_DEPTH: Int32 = 32 // ceiling of max_depth (default 8)
    public static let BITSEC_AUDIT_MAX_QUEUE_CAPACITY: Int32 = 4 * 1024 * 1024
    //: bitsec_audit_submit: the most events one call hands over.
    public static let BITSEC_AUDIT_SUBMIT_MAX_EVENTS: Int32 = 4096
    //: Chain: hash_n = SHA-256(hash_{n-1} || canonical_n), or HMAC-SHA-256 with hmac_key.
    public static let BITSEC_AUDIT_HASH_BYTES: Int32 = 32
    //: out_seq of bitsec_audit_emit when the drop policy dropped the event.
    public static let BITSEC_AUDIT_DROPPED: Int32 = 0

    // MARK: family sessions -- Sessions
    //: Fixed sizes: a session token (the secret) and a session identifier (public), without the
    //: NUL; the buffers of bitsec_session_create and bitsec_session_rotate hold one more byte.
    public static let BITSEC_SESSION_TOKEN_LEN: Int32 = 56
    public static let BITSEC_SESSION_ID_LEN: Int32 = 37
    //: Limits (bytes): user, tenant, client address and user agent.
    public static let BITSEC_SESSION_MAX_USER_BYTES: Int32 = 128
    public static let BITSEC_SESSION_MAX_TENANT_BYTES: Int32 = 64
    public static let BITSEC_SESSION_MAX_CLIENT_BYTES: Int32 = 256
    public static let BITSEC_SESSION_MAX_USER_AGENT_BYTES: Int32 = 1024
    //: The JSON of one session written by bitsec_session_validate never exceeds this.
    public static let BITSEC_SESSION_INFO_MAX_BYTES: Int32 = 2048
    //: Decisions of bitsec_session_validate and bitsec_session_rotate (*out_reason).
    public static let BITSEC_SESSION_REASON_VALID: Int32 = 0
    public static let BITSEC_SESSION_REASON_UNKNOWN: Int32 = 1 // no such session (revoked, rotated, ended, malformed token)
    public static let BITSEC_SESSION_REASON_EXPIRED: Int32 = 2 // the absolute timeout passed
    public static let BITSEC_SESSION_REASON_IDLE_TIMEOUT: Int32 = 3 // unused for longer than the idle timeout
    public static let BITSEC_SESSION_REASON_BINDING_MISMATCH: Int32 = 4 // another client: the session was ended
    // MARK: family csrf -- CSRF: synchronizer tokens, signed double-submit cookies, origin check
    //: Decisions of bitsec_csrf_token_verify, bitsec_csrf_cookie_verify, bitsec_csrf_origin_check (*out_reason).
    public static let BITSEC_CSRF_VALID: Int32 = 0
    public static let BITSEC_CSRF_MISSING: Int32 = 1 // no token presented (empty)
    public static let BITSEC_CSRF_MALFORMED: Int32 = 2 // not a bitsec CSRF token (length, base64url, version)
    public static let BITSEC_CSRF_INVALID: Int32 = 3 // MAC fails: forged, another session's, or the other kind
    public static let BITSEC_CSRF_EXPIRED: Int32 = 4 // older than csrf.max_age_s, or issued in the future
    public static let BITSEC_CSRF_MISMATCH: Int32 = 5 // double-submit: cookie and submitted value differ
    public static let BITSEC_CSRF_ORIGIN_NOT_ALLOWED: Int32 = 6 // Origin not in csrf.allowed_origins (or "null")
    public static let BITSEC_CSRF_ORIGIN_MISSING: Int32 = 7 // unsafe method without Origin and Sec-Fetch-Site
    public static let BITSEC_CSRF_CROSS_SITE: Int32 = 8 // Sec-Fetch-Site cross-site/same-site, no allowed Origin
    //: Sizes and limits (bytes).
    public static let BITSEC_CSRF_TOKEN_BYTES: Int32 = 76 // every issued token (base64url of 57 bytes)
    public static let BITSEC_CSRF_MAX_TOKEN_BYTES: Int32 = 256 // longer presented tokens are MALFORMED unread
    public static let BITSEC_CSRF_MAX_BINDING_BYTES: Int32 = 4096 // session_id / binding
    public static let BITSEC_CSRF_MAX_HEADER_BYTES: Int32 = 2048 // longer Origin / Sec-Fetch-Site match nothing
    // MARK: family passwords -- Passwords: scrypt hashes and the password policy
    //: Decisions of bitsec_password_verify (*out_reason).
    public static let BITSEC_PASSWORD_MATCH: Int32 = 0
    public static let BITSEC_PASSWORD_MISMATCH: Int32 = 1 // also every dummy verification (stored NULL)
    //: bitsec_password_check: flags, and the reasons written through *out_reasons (bit flags, 0 = accepted).
    public static let BITSEC_PASSWORD_FLAG_MFA: UInt32 = 1 // the password is one factor of several: min_length_mfa applies
    public static let BITSEC_PASSWORD_POLICY_TOO_SHORT: UInt32 = 1 // fewer code points than the minimum
    public static let BITSEC_PASSWORD_POLICY_TOO_LONG: UInt32 = 2 // more code points than max_length
    public static let BITSEC_PASSWORD_POLICY_BLOCKLISTED: UInt32 = 4 // a common or breached password (case-insensitive)
    //: Limits (bytes).
    public static let BITSEC_PASSWORD_MAX_BYTES: Int32 = 4096 // longest password hashed, verified or checked
    public static let BITSEC_PASSWORD_MAX_HASH_BYTES: Int32 = 256 // longest PHC string read; holds any hash written, NUL included
    // MARK: family guard -- Request guard
    //: bitsec_guard_check: decision codes (bitsec_guard_result.decision). Stable: never renumbered.
    public static let BITSEC_GUARD_ALLOWED: Int32 = 0
    public static let BITSEC_GUARD_TOKEN_REFUSED: Int32 = 1 // token_reason says why (HTTP 401)
    public static let BITSEC_GUARD_SCOPE_MISSING: Int32 = 2 // the token lacks a required scope (HTTP 403)
    public static let BITSEC_GUARD_PERMISSION_DENIED: Int32 = 3 // permission_reason says why (HTTP 403)
    public static let BITSEC_GUARD_RATE_LIMITED: Int32 = 4 // rate_retry_after says when to retry (HTTP 429)
    public static let BITSEC_GUARD_RATE_UNAVAILABLE: Int32 = 5 // the rate-limit store did not answer (HTTP 503)
    //: A reason field of a step that did not run.
    public static let BITSEC_GUARD_NOT_CHECKED: Int32 = -1
    //: Flags of bitsec_guard_check.
    public static let BITSEC_GUARD_FLAG_KEY_BY_SUBJECT: UInt32 = 1 // rate-limit key: the user's ("user:<sub>", with a tenant "tenant:<n>:<tenant>:user:<sub>") when the token verified
    public static let BITSEC_GUARD_FLAG_TOKEN_ADVISORY: UInt32 = 2 // an invalid token is no refusal (it only keys the rate limit)
    //: sizeof(bitsec_guard_result).
    public static let BITSEC_GUARD_RESULT_BYTES: Int32 = 64
    //: sizeof(bitsec_guard_route) and sizeof(bitsec_guard_request) (bitsec_guard_check_request).
    public static let BITSEC_GUARD_ROUTE_BYTES: Int32 = 64
    public static let BITSEC_GUARD_REQUEST_BYTES: Int32 = 144
}

// The version, for the ABI tests: declared in BitsecCore (Support/Version.swift), from which
// tools/gen_abi.py writes BITSEC_VERSION_* into include/bitsec.h and _abi.py.
extension BitsecABI {
    public static let BITSEC_VERSION_STRING: String = BitsecVersion.string.description
    public static let BITSEC_VERSION_NUMBER: UInt32 = BitsecVersion.number
    public static let BITSEC_ABI_VERSION: Int32 = BitsecVersion.abi
}
