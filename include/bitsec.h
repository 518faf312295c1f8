/*
 * bitsec.h -- the C interface of bitsec, an embeddable security runtime.
 *
 * Include this header only; it includes the generated function declarations
 * (bitsec_api.h). Link with `pkg-config --cflags --libs bitsec`. bitsec_api.h is
 * written to be read top to bottom: the conventions and the naming scheme, then the
 * functions family by family.
 *
 * CONVENTIONS
 * - Every fallible function returns an int32_t status: BITSEC_OK (0) or a BITSEC_E_* code.
 *   Codes are stable and never renumbered. bitsec_strerror(code) describes a code;
 *   bitsec_last_error() gives the calling thread's detail for its last failed call.
 * - Decisions are results, not errors: an invalid token, a denied permission, a limited
 *   request or a wrong code are BITSEC_OK calls that write the decision through
 *   out-parameters. Errors mean "could not decide".
 * - The caller owns every buffer it passes. Variable outputs use (out_buf, out_cap,
 *   *out_len): with out_buf NULL or out_cap too small the call returns
 *   BITSEC_E_BUFFER_TOO_SMALL and *out_len holds the size needed. Memory the
 *   library allocates is released with bitsec_free.
 * - Inputs are (pointer, length) pairs and need not be NUL-terminated unless documented.
 *   If the source is untrusted, check sizes against your own limits too: bitsec refuses
 *   anything over the BITSEC_MAX_* limits below with BITSEC_E_TOO_LARGE.
 * - Time-dependent operations take an explicit instant in Unix seconds; 0 means "now".
 *
 * GENERATED SECTIONS
 * The constants between "BEGIN GENERATED" and "END GENERATED" comments are written by
 * tools/gen_abi.py (`make header`) from Sources/Bitsec/ABIConstants.swift (the version from
 * Sources/BitsecCore/Support/Version.swift): change them there. The rest is written by hand.
 *
 * THREAD SAFETY
 * A bitsec_runtime is safe to share between threads: every function taking one may be
 * called concurrently. bitsec_runtime_close waits for calls in flight, and later calls on
 * the closed handle return BITSEC_E_CLOSED. Detail messages are per thread.
 */
#ifndef BITSEC_H
#define BITSEC_H

#include <stddef.h>
#include <stdint.h>

/* ==== BEGIN GENERATED version: Versions (tools/gen_abi.py from Sources/BitsecCore/Support/Version.swift; do not edit) ==== */
/* Versions: one number, MAJOR*10000 + MINOR*100 + PATCH (compare with bitsec_version_number()). */
#define BITSEC_VERSION_MAJOR 0
#define BITSEC_VERSION_MINOR 3
#define BITSEC_VERSION_PATCH 0
#define BITSEC_VERSION_NUMBER (BITSEC_VERSION_MAJOR * 10000 + BITSEC_VERSION_MINOR * 100 + BITSEC_VERSION_PATCH)
#define BITSEC_VERSION_STRING "0.3.0"
/* ABI version: the SONAME suffix (libbitsec.so.1); compare with bitsec_abi_version(). */
#define BITSEC_ABI_VERSION 1
/* ==== END GENERATED version ==== */

/* ==== BEGIN GENERATED runtime: Runtime: status codes and limits (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Status codes (int32_t). Stable: never renumbered; new codes may be added. */
#define BITSEC_OK 0
#define BITSEC_E_INVALID_ARGUMENT 1    /* NULL where required, bad length, invalid UTF-8 */
#define BITSEC_E_CONFIG 2              /* configuration invalid; detail names the field */
#define BITSEC_E_NOT_CONFIGURED 3      /* the operation's configuration section is absent */
#define BITSEC_E_BUFFER_TOO_SMALL 4    /* *out_len holds the size needed */
#define BITSEC_E_BACKEND_UNAVAILABLE 5 /* Redis down, refused, or no answer in time */
#define BITSEC_E_CRYPTO 6              /* OpenSSL reported a failure */
#define BITSEC_E_CLOSED 7              /* the handle was closed */
#define BITSEC_E_TOO_LARGE 8           /* an input exceeds a documented limit */
#define BITSEC_E_MALFORMED 9           /* an input could not be parsed */
#define BITSEC_E_IO 10                 /* a file could not be read or written */
#define BITSEC_E_TIMEOUT 11            /* a bounded wait ran out */
#define BITSEC_E_INTERNAL 12           /* a bug in bitsec: please report it */
#define BITSEC_E_UNSUPPORTED 13        /* well-formed but not supported */
#define BITSEC_E_NOT_FOUND 14          /* a named key, category or user does not exist */
/* Limits (bytes). */
#define BITSEC_MAX_CONFIG_BYTES (4 * 1024 * 1024)
#define BITSEC_MAX_JSON_DEPTH 64
#define BITSEC_MAX_ARGUMENT_BYTES (16 * 1024 * 1024)
#define BITSEC_MAX_MESSAGE_BYTES 512
/* ==== END GENERATED runtime ==== */

/* A runtime: everything built from one configuration document. Opaque. */
typedef struct bitsec_runtime bitsec_runtime;

#if defined(__GNUC__) || defined(__clang__)
#define BITSEC_NODISCARD __attribute__((warn_unused_result))
#else
#define BITSEC_NODISCARD
#endif

/* ---- tokens ---- */
/* ==== BEGIN GENERATED tokens: Tokens (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Reasons a token is refused (int32_t, written by bitsec_verify_token and
 * bitsec_token_refresh through out_reason). Stable: never renumbered; new ones may be added.
 * bitsec_token_reason_name(code) gives the name ("expired", ...). */
#define BITSEC_TOKEN_VALID 0
#define BITSEC_TOKEN_MALFORMED 1         /* not a compact JWS, bad base64url or JSON */
#define BITSEC_TOKEN_TOO_LARGE 2         /* over max_token_bytes (checked before decoding) */
#define BITSEC_TOKEN_UNSUPPORTED_ALG 3   /* alg unknown, or "none" in any letter case */
#define BITSEC_TOKEN_ALG_MISMATCH 4      /* header alg differs from the key's pinned alg */
#define BITSEC_TOKEN_UNKNOWN_KID 5       /* no such kid, or no kid and several keys apply */
#define BITSEC_TOKEN_BAD_SIGNATURE 6
#define BITSEC_TOKEN_EXPIRED 7           /* now >= exp + leeway */
#define BITSEC_TOKEN_NOT_YET_VALID 8     /* nbf > now + leeway */
#define BITSEC_TOKEN_ISSUED_IN_FUTURE 9  /* iat > now + leeway */
#define BITSEC_TOKEN_WRONG_ISSUER 10
#define BITSEC_TOKEN_WRONG_AUDIENCE 11
#define BITSEC_TOKEN_MISSING_CLAIM 12    /* exp, a required claim, or iss/aud when expected */
#define BITSEC_TOKEN_INVALID_CLAIM 13    /* a registered claim of the wrong JSON type */
#define BITSEC_TOKEN_REVOKED 14          /* its jti, session, subject was revoked */
#define BITSEC_TOKEN_CRIT_UNSUPPORTED 15 /* crit names an extension bitsec does not implement */
#define BITSEC_TOKEN_WRONG_TYPE 16       /* typ header mismatch, or refresh token used as access */
#define BITSEC_TOKEN_MISSING_KID 17      /* no kid header while tokens.require_kid is true */
/* Default of tokens.max_token_bytes; the configurable range is 256 .. 1 MiB. */
#define BITSEC_TOKEN_MAX_BYTES_DEFAULT 8192
/* Longest jti accepted by bitsec_token_revoke / bitsec_token_is_revoked; also the longest
 * session_id and subject of bitsec_token_revoke_session / bitsec_token_revoke_subject. */
#define BITSEC_TOKEN_MAX_JTI_BYTES 512
/* ==== END GENERATED tokens ==== */

/* ---- permissions ---- */
/* A decision of bitsec_check_permission (uint64_t): allowed bit, reason code, policy
 * generation (mod 65536) and the deciding rule's index. */
#define BITSEC_PERM_ALLOWED(d) ((int)((d) & 1u))
#define BITSEC_PERM_REASON(d) ((int32_t)(((d) >> 8) & 0xFFu))
#define BITSEC_PERM_RULE(d) ((int64_t)((d) >> 32) - 1)
/* ==== BEGIN GENERATED permissions: Permissions (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Reason codes (stable; texts from bitsec_permission_reason_name). */
#define BITSEC_PERM_GRANTED 1                  /* "granted" */
#define BITSEC_PERM_NO_GRANT 2                 /* "no_grant": no role of the principal grants it */
#define BITSEC_PERM_DENIED_BY_RULE 3           /* "denied_by_rule": a deny rule applies */
#define BITSEC_PERM_OWNER_ONLY 4               /* "condition_failed:owner_only" */
#define BITSEC_PERM_DEPARTMENT 5               /* "condition_failed:department" */
#define BITSEC_PERM_TENANT_MISMATCH 6          /* "tenant_mismatch" */
#define BITSEC_PERM_SCOPE_MISSING 7            /* "scope_missing": roles grant it, scopes do not */
#define BITSEC_PERM_UNKNOWN_RESOURCE 8         /* "unknown_resource" */
#define BITSEC_PERM_UNKNOWN_ACTION 9           /* "unknown_action" */
/* Limits. */
#define BITSEC_MAX_PERMISSION_BYTES 1024       /* "resource:action" */
#define BITSEC_MAX_PRINCIPAL_BYTES (64 * 1024) /* packed principal, context, batch list */
#define BITSEC_MAX_PERMISSION_BATCH 4096       /* entries per bitsec_check_permissions */
/* ==== END GENERATED permissions ==== */

/* ---- rate limits, brute-force counters, login guard ---- */
/* ==== BEGIN GENERATED ratelimit: Rate limits, brute-force counters and the login guard (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* bitsec_rate_limit_take: limits and the layout of out_decision (int64_t[7]). */
#define BITSEC_RATE_LIMIT_MAX_KEY_BYTES 512         /* a caller's key (user id, IP, API key) */
#define BITSEC_RATE_LIMIT_MAX_CATEGORY_BYTES 64     /* a category name */
#define BITSEC_RATE_LIMIT_DECISION_LEN 7
#define BITSEC_RATE_LIMIT_D_ALLOWED 0               /* 1 allowed, 0 denied */
#define BITSEC_RATE_LIMIT_D_LIMIT 1                 /* X-RateLimit-Limit: the bucket's capacity */
#define BITSEC_RATE_LIMIT_D_REMAINING 2             /* X-RateLimit-Remaining: whole tokens left */
#define BITSEC_RATE_LIMIT_D_RESET_AFTER 3           /* X-RateLimit-Reset: seconds until full */
#define BITSEC_RATE_LIMIT_D_RETRY_AFTER 4           /* Retry-After: >= 1 when denied, else 0 */
#define BITSEC_RATE_LIMIT_D_FLAGS 5                 /* BITSEC_RATE_LIMIT_FLAG_* bits */
#define BITSEC_RATE_LIMIT_D_REASON 6                /* a BITSEC_RATE_LIMIT_REASON_* code */
#define BITSEC_RATE_LIMIT_FLAG_DEGRADED 1           /* Redis unavailable: the failure policy decided */
#define BITSEC_RATE_LIMIT_REASON_OK 0               /* tokens were available */
#define BITSEC_RATE_LIMIT_REASON_LIMITED 1          /* the bucket did not hold cost tokens */
#define BITSEC_RATE_LIMIT_REASON_KEY_TABLE_FULL 2   /* in-process table at max_keys: new key refused */
#define BITSEC_RATE_LIMIT_REASON_BACKEND_DENY 3     /* Redis unavailable, failure_policy "deny" */
#define BITSEC_RATE_LIMIT_REASON_BACKEND_ALLOW 4    /* Redis unavailable, failure_policy "allow" */
/* bitsec_bruteforce_*: the layout of out_status (int64_t[6]). */
#define BITSEC_BRUTEFORCE_STATUS_LEN 6
#define BITSEC_BRUTEFORCE_S_BLOCKED 0               /* 1 blocked, 0 not */
#define BITSEC_BRUTEFORCE_S_FAILURES 1              /* failures within the window */
#define BITSEC_BRUTEFORCE_S_REMAINING 2             /* failures left before a block */
#define BITSEC_BRUTEFORCE_S_BLOCKED_UNTIL 3         /* Unix seconds; 0 when not blocked */
#define BITSEC_BRUTEFORCE_S_RETRY_AFTER 4           /* seconds until unblocked; 0 when not blocked */
#define BITSEC_BRUTEFORCE_S_FLAGS 5                 /* BITSEC_BRUTEFORCE_FLAG_* bits */
#define BITSEC_BRUTEFORCE_FLAG_DEGRADED 1           /* Redis unavailable: the failure policy decided */
#define BITSEC_BRUTEFORCE_FLAG_NEWLY_BLOCKED 2      /* this call started the block */
#define BITSEC_BRUTEFORCE_FLAG_TABLE_FULL 4         /* in-process table full: new key reported blocked */
/* bitsec_login_guard_begin: the layout of out_decision (int64_t[8]). */
#define BITSEC_LOGIN_GUARD_DECISION_LEN 8
#define BITSEC_LOGIN_GUARD_D_ALLOWED 0              /* 1 allowed (already counted as a failure), 0 refused */
#define BITSEC_LOGIN_GUARD_D_REASON 1               /* a BITSEC_LOGIN_GUARD_REASON_* code */
#define BITSEC_LOGIN_GUARD_D_REFUSED_BY 2           /* a BITSEC_LOGIN_GUARD_KEY_* value */
#define BITSEC_LOGIN_GUARD_D_RETRY_AFTER 3          /* Retry-After: >= 1 when refused, else 0 */
#define BITSEC_LOGIN_GUARD_D_REMAINING 4            /* failures the client may still make */
#define BITSEC_LOGIN_GUARD_D_FAILURE_RETRY_AFTER 5  /* the wait if this attempt fails (0: none) */
#define BITSEC_LOGIN_GUARD_D_TICKET 6               /* the reservation, for _succeeded/_cancel */
#define BITSEC_LOGIN_GUARD_D_FLAGS 7                /* BITSEC_LOGIN_GUARD_FLAG_* bits */
#define BITSEC_LOGIN_GUARD_KEY_NONE 0
#define BITSEC_LOGIN_GUARD_KEY_CLIENT 1
#define BITSEC_LOGIN_GUARD_KEY_ACCOUNT 2
#define BITSEC_LOGIN_GUARD_MAX_ACCOUNT_BYTES 4096   /* an account name as typed: folded first, hashed when its fold is 512 bytes or more */
#define BITSEC_LOGIN_GUARD_REASON_OK 0
#define BITSEC_LOGIN_GUARD_REASON_CLIENT_BLOCKED 1  /* the client's address group is blocked */
#define BITSEC_LOGIN_GUARD_REASON_ACCOUNT_BACKOFF 2 /* the account's next attempt must wait */
#define BITSEC_LOGIN_GUARD_REASON_ACCOUNT_LIMIT 3   /* the account reached max_failures in its window */
#define BITSEC_LOGIN_GUARD_REASON_TABLE_FULL 4      /* in-process table full: new key refused */
#define BITSEC_LOGIN_GUARD_REASON_BACKEND_DENY 5    /* Redis unavailable, failure_policy "deny" */
#define BITSEC_LOGIN_GUARD_FLAG_DEGRADED 1          /* Redis unavailable: the failure policy decided */
#define BITSEC_LOGIN_GUARD_FLAG_NEWLY_BLOCKED 2     /* this call started a block or back-off */
#define BITSEC_LOGIN_GUARD_FLAG_TABLE_FULL 4
/* ==== END GENERATED ratelimit ==== */

/* ---- MFA ---- */
/* ==== BEGIN GENERATED mfa: MFA: TOTP, HOTP and backup codes (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Decisions of bitsec_totp_verify, bitsec_totp_check, bitsec_hotp_check and
 * bitsec_backup_code_verify (written through out_reason; the call itself returns BITSEC_OK). */
#define BITSEC_TOTP_OK 0                                 /* accepted */
#define BITSEC_TOTP_WRONG_CODE 1                         /* well-formed, matches no step of the window */
#define BITSEC_TOTP_REPLAYED 2                           /* right code, but its step (or backup code) was already used */
#define BITSEC_TOTP_THROTTLED 3                          /* too many failures for this user; see out_retry_after */
#define BITSEC_TOTP_MALFORMED_CODE 4                     /* not exactly `digits` ASCII digits (or not a backup code) */
/* HMAC algorithms. */
#define BITSEC_OTP_SHA1 0
#define BITSEC_OTP_SHA256 1
#define BITSEC_OTP_SHA512 2
/* Limits. */
#define BITSEC_TOTP_MIN_DIGITS 6
#define BITSEC_TOTP_MAX_DIGITS 8
#define BITSEC_TOTP_MAX_WINDOW 10
#define BITSEC_TOTP_MAX_PERIOD 86400
#define BITSEC_TOTP_MAX_SECRET_TEXT_BYTES 256            /* base32 text of a secret */
#define BITSEC_TOTP_MIN_SECRET_BITS 80                   /* shortest secret verified (runtime: min_secret_bits) */
#define BITSEC_TOTP_MIN_NEW_SECRET_BITS 128              /* shortest secret generated */
#define BITSEC_TOTP_DEFAULT_SECRET_BITS 160
#define BITSEC_TOTP_MAX_NEW_SECRET_BITS 512
#define BITSEC_TOTP_MAX_CODE_BYTES 256
#define BITSEC_TOTP_MAX_USER_BYTES 256
#define BITSEC_TOTP_MAX_BACKUP_CODES 64
#define BITSEC_TOTP_MAX_SEALED_SECRET_BYTES 512          /* output of bitsec_totp_secret_seal, input of bitsec_totp_verify_sealed */
#define BITSEC_TOTP_SEALED_SECRET_CONTEXT_PREFIX "bitsec.totp.secret|" /* fields context: prefix + user */
/* ==== END GENERATED mfa ==== */

/* ---- fields ---- */
/* Field encryption (bitsec_encrypt_field / bitsec_decrypt_field, docs/fields.md).
 *
 * Token layout, binary form (L = key id length, n = plaintext length):
 *   [0]        format version: 0x01 randomised (AES-256-GCM), 0x02 deterministic (AES-256-SIV)
 *   [1]        L (1..BITSEC_FIELD_MAX_KEY_ID)
 *   [2, 2+L)   key id, ASCII [A-Za-z0-9._-]
 *   [2+L, 6+L) context check: first 4 bytes of AES-256-ECB(check subkey, first 16 bytes of
 *              SHA-256(context)); it only tells BITSEC_FIELD_REASON_WRONG_CONTEXT from
 *              BITSEC_FIELD_REASON_TAMPERED
 *   version 0x01: nonce (12, random) | ciphertext (n) | GCM tag (16);
 *                 AAD = bytes [0, 6+L) followed by the context
 *   version 0x02: SIV (16) | ciphertext of 0x00 || plaintext (n + 1);
 *                 AAD components = [bytes [0, 6+L), context]
 * Text form (the default): the binary form in URL-safe base64 without padding. Decryption
 * accepts both forms. Subkeys: HKDF-SHA256(key material, salt "bitsec-fields-v1",
 * info = purpose || 0x00 || key id), purposes "aead" (32 bytes), "siv" (64), "context-check" (32).
 *
 * Contexts: bind every value to where it lives, e.g.
 *   "equipment_records.serial_number|<primary key>|<tenant id>"
 * (table.column first, then the row's primary key, then the tenant, "|"-separated; escape "|"
 * and "\" inside components). A token copied to another row, column or tenant then fails
 * with BITSEC_FIELD_REASON_WRONG_CONTEXT. Deterministic columns use a context without the row
 * (e.g. "equipment_records.serial_number|<tenant id>") so equal values compare equal; this
 * leaks which rows hold equal values (and nothing else), and is allowed only for the contexts
 * listed in fields.deterministic_contexts. */
/* ==== BEGIN GENERATED fields: Field encryption (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Flags and limits of bitsec_encrypt_field / bitsec_decrypt_field (docs/fields.md). */
#define BITSEC_FIELD_BINARY 1u                   /* flag: binary output instead of text */
#define BITSEC_FIELD_DETERMINISTIC 2u            /* flag: AES-SIV, equal inputs give equal tokens */
#define BITSEC_FIELD_MAX_PLAINTEXT (1024 * 1024) /* bytes of a plaintext */
#define BITSEC_FIELD_MAX_CONTEXT 4096            /* bytes of a context */
#define BITSEC_FIELD_MAX_KEY_ID 32               /* bytes of a key id */
#define BITSEC_FIELD_MAX_TOKEN 1398190           /* bytes of a token (text form, largest plaintext) */
#define BITSEC_FERNET_MAX_TOKEN 1398200          /* bytes of a Fernet token (largest plaintext) */
#define BITSEC_FERNET_NO_TTL (-1)                /* ttl of bitsec_fernet_decrypt_ttl/_migrate_ttl: no limit */
/* Decisions of bitsec_decrypt_field, bitsec_field_rewrap and the Fernet functions (*out_reason). */
#define BITSEC_FIELD_REASON_OK 0
#define BITSEC_FIELD_REASON_MALFORMED 1          /* not a token: encoding, truncation, version */
#define BITSEC_FIELD_REASON_TAMPERED 2           /* the tag/MAC does not verify: bytes were altered */
#define BITSEC_FIELD_REASON_WRONG_CONTEXT 3      /* the token belongs to another context */
#define BITSEC_FIELD_REASON_UNKNOWN_KEY 4        /* its key id is not in the keyring */
#define BITSEC_FIELD_REASON_RETIRED_KEY 5        /* its key is retired: rewrap before retiring */
#define BITSEC_FIELD_REASON_EXPIRED 6            /* Fernet: older than the TTL */
#define BITSEC_FIELD_REASON_NOT_YET_VALID 7      /* Fernet: timestamp too far in the future */
/* ==== END GENERATED fields ==== */

/* ---- audit ---- */
/* ==== BEGIN GENERATED audit: Audit and metrics (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* bitsec_audit_emit: limits. An event up to BITSEC_AUDIT_MAX_EVENT_BYTES is read; longer text
 * members and details beyond the section's max_event_bytes are cut down (listed in the record's
 * "truncated"), not refused. max_depth may be lower than BITSEC_AUDIT_MAX_DEPTH. */
#define BITSEC_AUDIT_MAX_EVENT_BYTES (1024 * 1024) /* events read; ceiling of max_event_bytes (default 16 KiB) */
#define BITSEC_AUDIT_MAX_DEPTH 32                  /* ceiling of max_depth (default 8) */
#define BITSEC_AUDIT_MAX_QUEUE_CAPACITY (4 * 1024 * 1024)
/* bitsec_audit_submit: the most events one call hands over. */
#define BITSEC_AUDIT_SUBMIT_MAX_EVENTS 4096
/* Chain: hash_n = SHA-256(hash_{n-1} || canonical_n), or HMAC-SHA-256 with hmac_key. */
#define BITSEC_AUDIT_HASH_BYTES 32
/* out_seq of bitsec_audit_emit when the drop policy dropped the event. */
#define BITSEC_AUDIT_DROPPED 0
/* ==== END GENERATED audit ==== */

/* ---- sessions ---- */
/* ==== BEGIN GENERATED sessions: Sessions (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Fixed sizes: a session token (the secret) and a session identifier (public), without the
 * NUL; the buffers of bitsec_session_create and bitsec_session_rotate hold one more byte. */
#define BITSEC_SESSION_TOKEN_LEN 56
#define BITSEC_SESSION_ID_LEN 37
/* Limits (bytes): user, tenant, client address and user agent. */
#define BITSEC_SESSION_MAX_USER_BYTES 128
#define BITSEC_SESSION_MAX_TENANT_BYTES 64
#define BITSEC_SESSION_MAX_CLIENT_BYTES 256
#define BITSEC_SESSION_MAX_USER_AGENT_BYTES 1024
/* The JSON of one session written by bitsec_session_validate never exceeds this. */
#define BITSEC_SESSION_INFO_MAX_BYTES 2048
/* Decisions of bitsec_session_validate and bitsec_session_rotate (*out_reason). */
#define BITSEC_SESSION_REASON_VALID 0
#define BITSEC_SESSION_REASON_UNKNOWN 1          /* no such session (revoked, rotated, ended, malformed token) */
#define BITSEC_SESSION_REASON_EXPIRED 2          /* the absolute timeout passed */
#define BITSEC_SESSION_REASON_IDLE_TIMEOUT 3     /* unused for longer than the idle timeout */
#define BITSEC_SESSION_REASON_BINDING_MISMATCH 4 /* another client: the session was ended */
/* ==== END GENERATED sessions ==== */
/* ---- csrf ---- */
/* ==== BEGIN GENERATED csrf: CSRF: synchronizer tokens, signed double-submit cookies, origin check (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Decisions of bitsec_csrf_token_verify, bitsec_csrf_cookie_verify, bitsec_csrf_origin_check (*out_reason). */
#define BITSEC_CSRF_VALID 0
#define BITSEC_CSRF_MISSING 1              /* no token presented (empty) */
#define BITSEC_CSRF_MALFORMED 2            /* not a bitsec CSRF token (length, base64url, version) */
#define BITSEC_CSRF_INVALID 3              /* MAC fails: forged, another session's, or the other kind */
#define BITSEC_CSRF_EXPIRED 4              /* older than csrf.max_age_s, or issued in the future */
#define BITSEC_CSRF_MISMATCH 5             /* double-submit: cookie and submitted value differ */
#define BITSEC_CSRF_ORIGIN_NOT_ALLOWED 6   /* Origin not in csrf.allowed_origins (or "null") */
#define BITSEC_CSRF_ORIGIN_MISSING 7       /* unsafe method without Origin and Sec-Fetch-Site */
#define BITSEC_CSRF_CROSS_SITE 8           /* Sec-Fetch-Site cross-site/same-site, no allowed Origin */
/* Sizes and limits (bytes). */
#define BITSEC_CSRF_TOKEN_BYTES 76         /* every issued token (base64url of 57 bytes) */
#define BITSEC_CSRF_MAX_TOKEN_BYTES 256    /* longer presented tokens are MALFORMED unread */
#define BITSEC_CSRF_MAX_BINDING_BYTES 4096 /* session_id / binding */
#define BITSEC_CSRF_MAX_HEADER_BYTES 2048  /* longer Origin / Sec-Fetch-Site match nothing */
/* ==== END GENERATED csrf ==== */
/* ---- passwords ---- */
/* ==== BEGIN GENERATED passwords: Passwords: scrypt hashes and the password policy (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* Decisions of bitsec_password_verify (*out_reason). */
#define BITSEC_PASSWORD_MATCH 0
#define BITSEC_PASSWORD_MISMATCH 1            /* also every dummy verification (stored NULL) */
/* bitsec_password_check: flags, and the reasons written through *out_reasons (bit flags, 0 = accepted). */
#define BITSEC_PASSWORD_FLAG_MFA 1u           /* the password is one factor of several: min_length_mfa applies */
#define BITSEC_PASSWORD_POLICY_TOO_SHORT 1u   /* fewer code points than the minimum */
#define BITSEC_PASSWORD_POLICY_TOO_LONG 2u    /* more code points than max_length */
#define BITSEC_PASSWORD_POLICY_BLOCKLISTED 4u /* a common or breached password (case-insensitive) */
/* Limits (bytes). */
#define BITSEC_PASSWORD_MAX_BYTES 4096        /* longest password hashed, verified or checked */
#define BITSEC_PASSWORD_MAX_HASH_BYTES 256    /* longest PHC string read; holds any hash written, NUL included */
/* ==== END GENERATED passwords ==== */
/* ---- request guard ---- */
/* ==== BEGIN GENERATED guard: Request guard (tools/gen_abi.py from Sources/Bitsec/ABIConstants.swift; do not edit) ==== */
/* bitsec_guard_check: decision codes (bitsec_guard_result.decision). Stable: never renumbered. */
#define BITSEC_GUARD_ALLOWED 0
#define BITSEC_GUARD_TOKEN_REFUSED 1        /* token_reason says why (HTTP 401) */
#define BITSEC_GUARD_SCOPE_MISSING 2        /* the token lacks a required scope (HTTP 403) */
#define BITSEC_GUARD_PERMISSION_DENIED 3    /* permission_reason says why (HTTP 403) */
#define BITSEC_GUARD_RATE_LIMITED 4         /* rate_retry_after says when to retry (HTTP 429) */
#define BITSEC_GUARD_RATE_UNAVAILABLE 5     /* the rate-limit store did not answer (HTTP 503) */
/* A reason field of a step that did not run. */
#define BITSEC_GUARD_NOT_CHECKED (-1)
/* Flags of bitsec_guard_check. */
#define BITSEC_GUARD_FLAG_KEY_BY_SUBJECT 1u /* rate-limit key: the user's ("user:<sub>", with a tenant "tenant:<n>:<tenant>:user:<sub>") when the token verified */
#define BITSEC_GUARD_FLAG_TOKEN_ADVISORY 2u /* an invalid token is no refusal (it only keys the rate limit) */
/* sizeof(bitsec_guard_result). */
#define BITSEC_GUARD_RESULT_BYTES 64
/* sizeof(bitsec_guard_route) and sizeof(bitsec_guard_request) (bitsec_guard_check_request). */
#define BITSEC_GUARD_ROUTE_BYTES 64
#define BITSEC_GUARD_REQUEST_BYTES 144
/* ==== END GENERATED guard ==== */

/* The decision of bitsec_guard_check: fixed layout, 64 bytes (BITSEC_GUARD_RESULT_BYTES).
 * A reason of a step that did not run is BITSEC_GUARD_NOT_CHECKED (-1); the rate_* fields
 * are 0 without a take. */
typedef struct bitsec_guard_result {
    int32_t decision;          /* BITSEC_GUARD_* */
    int32_t http_status;       /* 200, or the refusal's status: 401, 403, 429, 503 */
    int32_t token_reason;      /* BITSEC_TOKEN_* */
    int32_t permission_reason; /* BITSEC_PERM_* */
    int32_t permission_rule;   /* the deciding rule's index (bitsec_permission_rule), or -1 */
    int32_t rate_reason;       /* BITSEC_RATE_LIMIT_REASON_* */
    int64_t rate_limit;        /* the bucket's capacity (X-RateLimit-Limit) */
    int64_t rate_remaining;    /* whole tokens left (X-RateLimit-Remaining) */
    int64_t rate_reset_after;  /* seconds until full (X-RateLimit-Reset) */
    int64_t rate_retry_after;  /* seconds to wait when limited (Retry-After), else 0 */
    int64_t rate_flags;        /* BITSEC_RATE_LIMIT_FLAG_DEGRADED */
} bitsec_guard_result;

/* A route's requirement for bitsec_guard_check_request: the inputs of bitsec_guard_check that
 * are the same for every request of a route, filled once. 64 bytes (BITSEC_GUARD_ROUTE_BYTES);
 * the bytes it points to are the caller's and must stay valid while it is used. */
typedef struct bitsec_guard_route {
    char const *scopes;        /* as bitsec_guard_check's scopes, scopes_len */
    size_t scopes_len;
    char const *permission;    /* as bitsec_guard_check's permission, permission_len */
    size_t permission_len;
    char const *category;      /* as bitsec_guard_check's category, category_len */
    size_t category_len;
    int64_t cost;              /* as bitsec_guard_check's cost */
    uint32_t flags;            /* BITSEC_GUARD_FLAG_* */
    uint32_t reserved;         /* 0 */
} bitsec_guard_route;

/* One request for bitsec_guard_check_request: its own inputs, the claims document's buffer,
 * and the outputs. 144 bytes (BITSEC_GUARD_REQUEST_BYTES). */
typedef struct bitsec_guard_request {
    char const *token;         /* as bitsec_guard_check's token, token_len */
    size_t token_len;
    char const *key;           /* as bitsec_guard_check's key, key_len */
    size_t key_len;
    char const *context;       /* as bitsec_guard_check's context, context_len */
    size_t context_len;
    int64_t at;                /* as bitsec_guard_check's at */
    char *out_buf;             /* as bitsec_guard_check's out_buf, out_cap */
    size_t out_cap;
    size_t out_len;            /* out: as bitsec_guard_check's *out_len */
    bitsec_guard_result result; /* out: as bitsec_guard_check's *out_guard */
} bitsec_guard_request;

#include "bitsec_api.h"

#endif /* BITSEC_H */
