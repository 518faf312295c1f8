/*
 * bitsec.h -- the C interface of bitsec, an embeddable security runtime.
 *
 * Include this header only; it includes the generated function declarations
 * (bitsec_api.h). Link with `pkg-config --cflags --libs bitsec`.
 *
 * CONVENTIONS
 * - Every fallible function returns an int32_t status: BITSEC_OK (0) or a BITSEC_E_* code.
 *   Codes are stable and never renumbered. bitsec_strerror(code) describes a code;
 *   bitsec_last_error() gives the calling thread's detail for its last failed call.
 * - Decisions are results, not errors: an invalid token, a denied permission, a limited
 *   request or a wrong code are BITSEC_OK calls that write the decision through
 *   out-parameters. Errors mean "could not decide".
 * - The caller owns every buffer it passes. Variable outputs use (out_buf, out_cap,
 *   *out_len): on BITSEC_E_BUFFER_TOO_SMALL, *out_len holds the size needed. Memory the
 *   library allocates is released with bitsec_free.
 * - Inputs are (pointer, length) pairs and need not be NUL-terminated unless documented.
 *   If the source is untrusted, check sizes against your own limits too: bitsec refuses
 *   anything over the BITSEC_MAX_* limits below with BITSEC_E_TOO_LARGE.
 * - Time-dependent operations take an explicit instant in Unix seconds; 0 means "now".
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

/* Versions: one number, MAJOR*10000 + MINOR*100 + PATCH (compare with bitsec_version_number()). */
#define BITSEC_VERSION_MAJOR 0
#define BITSEC_VERSION_MINOR 1
#define BITSEC_VERSION_PATCH 0
#define BITSEC_VERSION_NUMBER (BITSEC_VERSION_MAJOR * 10000 + BITSEC_VERSION_MINOR * 100 + BITSEC_VERSION_PATCH)
#define BITSEC_VERSION_STRING "0.1.0"
/* ABI version: the SONAME suffix (libbitsec.so.1); compare with bitsec_abi_version(). */
#define BITSEC_ABI_VERSION 1

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

/* A runtime: everything built from one configuration document. Opaque. */
typedef struct bitsec_runtime bitsec_runtime;

#if defined(__GNUC__) || defined(__clang__)
#define BITSEC_NODISCARD __attribute__((warn_unused_result))
#else
#define BITSEC_NODISCARD
#endif

/* ---- permissions ---- */
/* A decision of bitsec_check_permission (uint64_t): allowed bit, reason code, policy
 * generation (mod 65536) and the deciding rule's index. */
#define BITSEC_PERM_ALLOWED(d) ((int)((d) & 1u))
#define BITSEC_PERM_REASON(d) ((int32_t)(((d) >> 8) & 0xFFu))
#define BITSEC_PERM_RULE(d) ((int64_t)((d) >> 32) - 1)
/* Reason codes (stable; texts from bitsec_permission_reason). */
#define BITSEC_PERM_GRANTED 1          /* "granted" */
#define BITSEC_PERM_NO_GRANT 2         /* "no_grant": no role of the principal grants it */
#define BITSEC_PERM_DENIED_BY_RULE 3   /* "denied_by_rule": a deny rule applies */
#define BITSEC_PERM_OWNER_ONLY 4       /* "condition_failed:owner_only" */
#define BITSEC_PERM_DEPARTMENT 5       /* "condition_failed:department" */
#define BITSEC_PERM_TENANT_MISMATCH 6  /* "tenant_mismatch" */
#define BITSEC_PERM_SCOPE_MISSING 7    /* "scope_missing": roles grant it, scopes do not */
#define BITSEC_PERM_UNKNOWN_RESOURCE 8 /* "unknown_resource" */
#define BITSEC_PERM_UNKNOWN_ACTION 9   /* "unknown_action" */
/* Limits. */
#define BITSEC_MAX_PERMISSION_BYTES 1024          /* "resource:action" */
#define BITSEC_MAX_PRINCIPAL_BYTES (64 * 1024)    /* packed principal, context, batch list */
#define BITSEC_MAX_PERMISSION_BATCH 4096          /* entries per bitsec_check_permissions */

#include "bitsec_api.h"

#endif /* BITSEC_H */
