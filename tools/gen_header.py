#!/usr/bin/env python3
"""Turns the Swift compiler's generated header (-emit-clang-header-path) into include/bitsec_api.h.

The compiler's header targets clang (pragmas, vector typedefs, nullability keywords) and
does not compile under gcc -Werror. We keep exactly what it says about the C functions
(doc comments and prototypes, as printed) and drop the rest:

- SWIFT_EXTERN / SWIFT_NOEXCEPT are removed; SWIFT_WARN_UNUSED_RESULT becomes
  BITSEC_NODISCARD; _Nullable/_Nonnull are removed (nullability is documented per parameter);
- an opaque handle, printed as `void *` (Swift's OpaquePointer), gets its C type back by
  parameter name: `rt` -> `bitsec_runtime *`, `out_rt` -> `bitsec_runtime **`;
- typographic quotes the compiler substitutes in comments go back to ASCII, and the HTML it
  renders from the comments' markdown goes back to plain text;
- the functions are ordered by the FAMILIES table (a function missing from it is an error),
  each family opening with an overview and its thread-safety note;
- a comment line "Deprecated: use bitsec_x" adds BITSEC_DEPRECATED("use bitsec_x").

Usage: gen_header.py COMPILER_HEADER OUTPUT
"""
import re
import sys

HANDLE_PARAMS = {
    "rt": "bitsec_runtime",
}
# Fixed-layout result structs (include/bitsec.h), printed as `void *` (Swift's raw pointer),
# get their C type back by parameter name.
STRUCT_PARAMS = {
    "out_guard": "bitsec_guard_result",
    "request": "bitsec_guard_request",
}
# The same for structs passed as `const void *` (Swift's UnsafeRawPointer).
CONST_STRUCT_PARAMS = {
    "route": "bitsec_guard_route",
}


def extract(text: str) -> list[tuple[list[str], str]]:
    start = text.index('extern "C" {\n#endif\n')
    end = text.index('#if defined(__cplusplus)\n} // extern "C"', start)
    body = text[start + len('extern "C" {\n#endif\n'):end]
    decls = []
    comment: list[str] = []
    for line in body.splitlines():
        s = line.strip()
        if s.startswith("///"):
            comment.append(s)
        elif s.startswith("SWIFT_EXTERN"):
            decls.append((comment, s))
            comment = []
        elif s == "":
            continue
        else:
            raise SystemExit(f"gen_header: unexpected line in the generated header: {s!r}")
    return decls


def clean_decl(decl: str) -> str:
    d = decl.replace("SWIFT_EXTERN ", "")
    d = d.replace(" SWIFT_NOEXCEPT", "")
    d = d.replace(" SWIFT_WARN_UNUSED_RESULT", " BITSEC_NODISCARD")
    d = re.sub(r"\s*_Null(able|_unspecified)\b", "", d)
    d = re.sub(r"\s*_Nonnull\b", "", d)
    for name, ctype in HANDLE_PARAMS.items():
        d = re.sub(rf"void \* \* out_{name}\b", f"{ctype} **out_{name}", d)
        d = re.sub(rf"void \* {name}\b", f"{ctype} *{name}", d)
    for name, ctype in STRUCT_PARAMS.items():
        d = re.sub(rf"void \* {name}\b", f"{ctype} * {name}", d)
    for name, ctype in CONST_STRUCT_PARAMS.items():
        d = re.sub(rf"void const \* {name}\b", f"{ctype} const * {name}", d)
    d = d.replace(" * ", " *").replace("** ", "**")
    return d


def clean_comment(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        for a, b in (("\u201c", '"'), ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'"), ("\u2014", "--"), ("\u2026", "..."), ("\u2013", "-")):
            line = line.replace(a, b)
        # The compiler renders the comments' markdown as HTML: `x` becomes <code>x</code>.
        # Back to plain text; any other markup is an error to fix in the Swift comment.
        line = re.sub(r"<code>(.*?)</code>", r"\1", line)
        line = line.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
        bad = re.search(r"</?(em|strong|code|a|p|ul|li|pre)\b[^>]*>", line)
        if bad:
            raise SystemExit(f"gen_header: markup {bad.group(0)!r} in a doc comment (reword the `///` text "
                             f"so that markdown does not turn it into HTML): {line!r}")
        out.append(line)
    return out


# The header's reading order: one section per family, in the order a user meets them, simple
# calls before advanced ones. Every exported function must appear here exactly once: a new
# export missing from the table fails the generator, so it cannot land unsorted.
FAMILIES: list[tuple[str, str, str, list[str]]] = [
    ("RUNTIME AND ERRORS",
     "Open a runtime from a JSON configuration document, use it from any number of threads,\n"
     "close it once. A failed call returns a BITSEC_E_* code; bitsec_strerror names the code\n"
     "and bitsec_last_error gives the calling thread's detail message. bitsec_free releases\n"
     "what an *_alloc call returned. Library-wide calls without a family noun (bitsec_free,\n"
     "bitsec_strerror, bitsec_last_error, bitsec_version_*, bitsec_abi_version,\n"
     "bitsec_random_bytes) do not take a runtime.",
     "every function is safe from any thread. bitsec_runtime_close waits for the\n"
     "calls in flight on the handle; later calls on it return BITSEC_E_CLOSED. The detail\n"
     "message of bitsec_last_error belongs to the calling thread.",
     ["bitsec_runtime_open", "bitsec_runtime_open_file", "bitsec_runtime_close", "bitsec_strerror",
      "bitsec_last_error", "bitsec_runtime_describe", "bitsec_runtime_describe_alloc", "bitsec_free",
      "bitsec_version_string", "bitsec_version_number", "bitsec_abi_version", "bitsec_random_bytes"]),
    ("TOKENS",
     "Verify a compact JWS/JWT (bitsec_verify_token: an invalid token is a BITSEC_OK decision\n"
     "with a BITSEC_TOKEN_* reason), then sign, issue access/refresh pairs, refresh, revoke\n"
     "(by jti, token, session or subject) and reload the verification keys. Needs the\n"
     "configuration's tokens section.",
     "every function is safe from any thread; verification runs concurrently with\n"
     "bitsec_token_keys_reload and revocations (each call sees the old or the new keys).",
     ["bitsec_verify_token", "bitsec_token_reason_name", "bitsec_verify_token_at", "bitsec_token_sign",
      "bitsec_token_issue_pair", "bitsec_token_refresh", "bitsec_token_revoke", "bitsec_token_revoke_token",
      "bitsec_token_revoke_session", "bitsec_token_revoke_subject", "bitsec_token_revoke_subject_in_tenant",
      "bitsec_token_is_revoked",
      "bitsec_token_keys_reload",
      "bitsec_token_key_generate", "bitsec_token_key_public_jwk"]),
    ("PERMISSIONS",
     "Decide whether a principal (a JSON document, or the result of bitsec_verify_token) holds\n"
     "a permission under the configured policy: the decision is a BITSEC_OK result packed\n"
     "with its reason and deciding rule. Batch and pre-packed variants follow, then policy\n"
     "reloads (live and shadow) and statistics.",
     "every function is safe from any thread; a check concurrent with a policy load\n"
     "uses either the old or the new policy, never a mix.",
     ["bitsec_check_permission", "bitsec_permission_reason_name", "bitsec_permission_rule",
      "bitsec_check_permission_claims", "bitsec_check_permission_packed", "bitsec_check_permissions",
      "bitsec_permission_policy_load", "bitsec_permission_shadow_load", "bitsec_permission_stats"]),
    ("RATE LIMITS AND LOGIN GUARD",
     "Token buckets per category and key (bitsec_rate_limit_take: a denial is a BITSEC_OK\n"
     "decision), the login guard that reserves an attempt per account and client before the\n"
     "password check, and the brute-force counters (failures per key, then a block). In\n"
     "process or in Redis; a Redis outage is never an error: the failure policy decides and\n"
     "the DEGRADED flag is set.",
     "every function is safe from any thread; counting is atomic per key, in process\n"
     "and in Redis.",
     ["bitsec_rate_limit_take", "bitsec_rate_limit_reset", "bitsec_login_guard_begin",
      "bitsec_login_guard_succeeded", "bitsec_login_guard_cancel", "bitsec_login_guard_client_key",
      "bitsec_bruteforce_record_failure", "bitsec_bruteforce_record_success", "bitsec_bruteforce_check",
      "bitsec_bruteforce_reset"]),
    ("MFA: TOTP, BACKUP CODES, HOTP",
     "Verify a TOTP code for a user once (bitsec_totp_verify: replays are refused), enrol\n"
     "(secret, provisioning URI), backup codes, sealed secrets; then the stateless\n"
     "RFC 6238 / RFC 4226 primitives (bitsec_totp_code/check, bitsec_hotp_code/check) that\n"
     "take the secret and parameters explicitly.",
     "every function is safe from any thread; a code is accepted at most once even\n"
     "when the same code is presented concurrently (in process, or through Redis).",
     ["bitsec_totp_verify", "bitsec_totp_secret_generate", "bitsec_totp_provisioning_uri", "bitsec_totp_now",
      "bitsec_backup_code_generate", "bitsec_backup_code_verify", "bitsec_totp_secret_seal",
      "bitsec_totp_verify_sealed", "bitsec_totp_code", "bitsec_totp_check", "bitsec_totp_uri",
      "bitsec_hotp_code", "bitsec_hotp_check"]),
    ("FIELDS",
     "Encrypt a field value bound to a context (bitsec_encrypt_field) and decrypt it\n"
     "(bitsec_decrypt_field: a token that does not decrypt is a BITSEC_OK decision with a\n"
     "BITSEC_FIELD_REASON_* reason); output sizes, re-encryption under the primary key and key\n"
     "reloads; then Fernet tokens compatible with Python's cryptography package.",
     "every function is safe from any thread, concurrently with\n"
     "bitsec_field_keys_reload (each call uses the old or the new keyring).",
     ["bitsec_encrypt_field", "bitsec_decrypt_field", "bitsec_field_reason_name", "bitsec_field_bound",
      "bitsec_field_rewrap", "bitsec_field_keys_reload", "bitsec_fernet_encrypt", "bitsec_fernet_decrypt",
      "bitsec_fernet_decrypt_ttl", "bitsec_fernet_bound", "bitsec_fernet_rotate", "bitsec_fernet_migrate",
      "bitsec_fernet_migrate_ttl"]),
    ("AUDIT AND METRICS",
     "Emit security events into the hash-chained audit trail (bitsec_audit_emit never waits\n"
     "for disk or network unless the durability mode asks for it), flush, read the writer's\n"
     "statistics, verify a trail file; and the runtime's metrics in the Prometheus text format.",
     "every function is safe from any thread; events of concurrent emitters are\n"
     "chained in one order.",
     ["bitsec_audit_emit", "bitsec_audit_submit", "bitsec_audit_flush", "bitsec_audit_stats", "bitsec_audit_verify",
      "bitsec_metrics_text"]),
    ("REDIS",
     "The runtime's Redis connection pool, shared by revocations, rate limits, the login\n"
     "guard and TOTP replay state.",
     "safe from any thread.",
     ["bitsec_redis_ping"]),
    ("SESSIONS",
     "Server-side sessions for browsers: create one at login (a secret token for the cookie\n"
     "and a public identifier, the session_id of the tokens issued for it), validate it on each\n"
     "request (idle timer, client binding: a refused session is a BITSEC_OK decision with a\n"
     "BITSEC_SESSION_REASON_* reason), rotate its identifier at login and privilege changes,\n"
     "list and revoke a user's sessions. In process, on the host or in Redis.",
     "every function is safe from any thread; a session's checks and changes are\n"
     "atomic per session (in process, in the host region and in Redis).",
     ["bitsec_session_create", "bitsec_session_validate", "bitsec_session_rotate", "bitsec_session_revoke",
      "bitsec_session_revoke_user", "bitsec_session_list"]),
    ("CSRF",
     "Cross-site request forgery defences (OWASP CSRF Prevention Cheat Sheet): synchronizer\n"
     "tokens bound to a session (bitsec_csrf_token_issue / _verify), signed double-submit\n"
     "cookies bound to a session binding value (bitsec_csrf_cookie_issue / _verify) and the\n"
     "Origin / Sec-Fetch-Site check of unsafe methods (bitsec_csrf_origin_check). A refusal is a\n"
     "BITSEC_OK decision with a BITSEC_CSRF_* reason. Needs the configuration's csrf section.",
     "every function is safe from any thread; checks run concurrently with\n"
     "bitsec_csrf_keys_reload (each call sees the old or the new keys).",
     ["bitsec_csrf_token_issue", "bitsec_csrf_token_verify", "bitsec_csrf_cookie_issue", "bitsec_csrf_cookie_verify",
      "bitsec_csrf_origin_check", "bitsec_csrf_reason_name", "bitsec_csrf_keys_reload"]),
    ("PASSWORDS",
     "Hash passwords with scrypt into PHC strings ($scrypt$ln=17,r=8,p=1$salt$hash), verify\n"
     "them in constant time (with a dummy verification for unknown accounts: a stored NULL),\n"
     "tell when a stored hash needs rehashing, and check new passwords against the policy\n"
     "(NIST SP 800-63B-4: lengths in code points, no composition rules, a blocklist). Passwords\n"
     "are passed NFKC-normalised; the library does not normalise. Needs the configuration's\n"
     "passwords section.",
     "every function is safe from any thread. Hashing and verifying cost one scrypt\n"
     "each (memory and time set by the configuration): call them from worker threads.",
     ["bitsec_password_hash", "bitsec_password_verify", "bitsec_password_needs_rehash",
      "bitsec_password_check"]),
    ("DEPRECATED NAMES",
     "Names of the 0.1 and 0.2 releases, before the companions followed the\n"
     "bitsec_<family>_<verb> scheme. Each is exported for the rest of ABI version 1 and calls\n"
     "the function named in its deprecation message; compilers warn on use.",
     "as the function each one calls.",
     ["bitsec_permission_reason", "bitsec_fields_reload", "bitsec_rewrap_field", "bitsec_client_key",
      "bitsec_backup_codes_generate"]),
    ("REQUEST GUARD",
     "One call per protected request: the bearer token (through the verified-token cache),\n"
     "its scopes, the permission for its principal and the rate-limit take, deciding as the\n"
     "separate calls do, into the fixed-layout bitsec_guard_result of <bitsec.h>.",
     "safe from any thread.",
     ["bitsec_guard_check", "bitsec_guard_check_request"]),
]

CONVENTIONS = """\
/*
 * bitsec_api.h -- the functions of bitsec, for reading top to bottom.
 *
 * GENERATED by `make header` from Sources/Bitsec (the Swift compiler's
 * -emit-clang-header-path output, ordered and cleaned by tools/gen_header.py). Do not edit:
 * change the `///` comments and signatures in Sources/Bitsec, then run `make header`.
 * Include <bitsec.h>, not this file; it holds the status codes, limits and constants.
 *
 * CONVENTIONS
 *
 * Status codes. Every fallible function returns an int32_t: BITSEC_OK (0) or a BITSEC_E_*
 *   code (stable, never renumbered). An error means "could not decide"; decisions (invalid
 *   token, denied permission, limited request, wrong code) are BITSEC_OK results written
 *   through out-parameters. bitsec_strerror(code) names a code, bitsec_last_error() gives the
 *   calling thread's detail for its last failed call (never secrets or caller data).
 *
 * Ownership. The caller owns every buffer it passes; inputs are only read during the call.
 *   Inputs are (pointer, length) pairs and need not be NUL-terminated unless documented; NULL
 *   with length 0 is the empty input. Variable outputs are (out_buf, out_cap, *out_len):
 *   the library writes at most out_cap bytes, then a NUL when there is room (not counted in
 *   *out_len). Memory the library allocates (the *_alloc calls) is released with bitsec_free.
 *
 * Size queries. Every variable output answers one way: with out_buf NULL (out_cap 0) or
 *   out_cap too small, the call returns BITSEC_E_BUFFER_TOO_SMALL, *out_len holds the size
 *   needed, and nothing else is written to the output buffer; call again with a buffer of
 *   *out_len + 1 bytes (room for the NUL). bitsec_token_refresh answers the size any
 *   refresh may need (checked before the old token is spent), an upper bound of what it
 *   writes. The verify calls (bitsec_verify_token, bitsec_verify_token_at) decide first:
 *   with out_buf NULL and out_cap 0 they return BITSEC_OK with the decision in *out_reason
 *   and the document's size in *out_len (the decision alone, as since 0.1.0; ABI version 1
 *   keeps that answer); a buffer too small but not 0 is BITSEC_E_BUFFER_TOO_SMALL as above.
 *
 * Time. Time-dependent calls take an explicit instant `at` in Unix seconds; 0 means now.
 *
 * Thread safety. A bitsec_runtime is safe to share between threads: every function taking
 *   one may be called concurrently, and bitsec_runtime_close waits for calls in flight
 *   (later calls return BITSEC_E_CLOSED). Each section below states its own guarantees.
 *
 * Names. bitsec_<family>_<verb>, with the families runtime, token, permission, rate_limit,
 *   login_guard, bruteforce, totp, hotp, backup_code, field, fernet, audit, metrics,
 *   redis and session. The six central operations read as sentences and keep their names:
 *   bitsec_verify_token, bitsec_check_permission, bitsec_rate_limit_take, bitsec_totp_verify,
 *   bitsec_encrypt_field / bitsec_decrypt_field and bitsec_audit_emit (their variants add a
 *   suffix: bitsec_verify_token_at, bitsec_check_permission_claims, ...). A reason code's
 *   name is bitsec_<family>_reason_name; a key reload is bitsec_<family>_keys_reload.
 *   Library-wide calls have no family: bitsec_free, bitsec_strerror, bitsec_last_error,
 *   bitsec_version_string, bitsec_version_number, bitsec_abi_version, bitsec_random_bytes.
 *   A renamed function keeps its old name as a deprecated alias for the rest of the ABI
 *   version (see DEPRECATED NAMES at the end).
 *
 * SECTIONS: runtime and errors; tokens; permissions; rate limits and login guard; MFA;
 *   fields; audit and metrics; Redis; sessions; deprecated names.
 */"""

DEPRECATED_RE = re.compile(r"^/// Deprecated: use (bitsec_[a-z0-9_]+)")


def banner(title: str, overview: str, thread: str) -> list[str]:
    out = ["/* " + "=" * 86, " * " + title, " *"]
    out += [" * " + line for line in overview.splitlines()]
    out.append(" *")
    thread_lines = ("THREAD SAFETY: " + thread).splitlines()
    out += [" * " + line for line in thread_lines]
    out.append(" */")
    out.append("")
    return out


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    decls = extract(open(src, encoding="utf-8").read())
    by_name: dict[str, tuple[list[str], str]] = {}
    for comment, decl in decls:
        d = clean_decl(decl)
        m = re.search(r"\b(bitsec_[a-z0-9_]+)\(", d)
        if not m:
            raise SystemExit(f"gen_header: no bitsec_ function in {d!r}")
        name = m.group(1)
        if name in by_name:
            raise SystemExit(f"gen_header: duplicate declaration of {name}")
        if not comment:
            raise SystemExit(f"gen_header: {name} has no doc comment in Sources/Bitsec")
        comment = clean_comment(comment)
        for line in comment:
            dm = DEPRECATED_RE.match(line)
            if dm:
                d = d[:-1] + f' BITSEC_DEPRECATED("use {dm.group(1)}");'
        by_name[name] = (comment, d)
    listed = [n for _, _, _, names in FAMILIES for n in names]
    dup = {n for n in listed if listed.count(n) > 1}
    if dup:
        raise SystemExit(f"gen_header: listed twice in FAMILIES: {sorted(dup)}")
    missing = sorted(set(by_name) - set(listed))
    if missing:
        raise SystemExit(f"gen_header: exported but not in the FAMILIES table of tools/gen_header.py "
                         f"(add each to its family's section): {missing}")
    gone = sorted(set(listed) - set(by_name))
    if gone:
        raise SystemExit(f"gen_header: in the FAMILIES table but not exported: {gone}")
    parts = CONVENTIONS.splitlines() + [
        "#ifndef BITSEC_API_H",
        "#define BITSEC_API_H",
        "#ifndef BITSEC_H",
        '#error "include <bitsec.h> instead of <bitsec_api.h>"',
        "#endif",
        "",
        "/* Marks a deprecated alias; compilers without the attribute get a plain declaration. */",
        "#ifndef BITSEC_DEPRECATED",
        "#if defined(__GNUC__) || defined(__clang__)",
        "#define BITSEC_DEPRECATED(msg) __attribute__((deprecated(msg)))",
        "#else",
        "#define BITSEC_DEPRECATED(msg)",
        "#endif",
        "#endif",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
    ]
    for title, overview, thread, names in FAMILIES:
        parts += banner(title, overview, thread)
        for name in names:
            comment, d = by_name[name]
            parts.extend(comment)
            parts.append(d)
            parts.append("")
    parts += ["#ifdef __cplusplus", '} /* extern "C" */', "#endif", "", "#endif /* BITSEC_API_H */", ""]
    with open(dst, "w", encoding="ascii") as f:
        f.write("\n".join(parts))


if __name__ == "__main__":
    main()
