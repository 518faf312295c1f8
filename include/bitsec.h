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

/* ---- tokens ---- */
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
#define BITSEC_TOKEN_REVOKED 14          /* its jti was revoked */
#define BITSEC_TOKEN_CRIT_UNSUPPORTED 15 /* crit names an extension bitsec does not implement */
#define BITSEC_TOKEN_WRONG_TYPE 16       /* typ header mismatch, or refresh token used as access */
/* Default of tokens.max_token_bytes; the configurable range is 256 .. 1 MiB. */
#define BITSEC_TOKEN_MAX_BYTES_DEFAULT 8192
/* Longest jti accepted by bitsec_token_revoke / bitsec_token_is_revoked. */
#define BITSEC_TOKEN_MAX_JTI_BYTES 512

#include "bitsec_api.h"

#endif /* BITSEC_H */
