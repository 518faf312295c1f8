/* Compiled as C11 and as C++17, with gcc and clang, at -Wall -Wextra -Werror; linked against
 * libbitsec.so and run. The outputs of one export fed to another as they are: a token signed
 * and verified through the ABI, its result document decided by bitsec_check_permission_claims;
 * and the exact semantics of the time and TTL arguments. */
#include <bitsec.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

static const char *config =
    "{\"allow_inline_secrets\": true,"
    " \"tokens\": {\"keys\": [{\"kid\": \"hs\", \"alg\": \"HS256\","
    "   \"secret\": {\"value\": \"0123456789abcdef0123456789abcdef\"}}], \"leeway_seconds\": 0},"
    " \"permissions\": {\"policy\": {\"resources\": [\"docs\"], \"actions\": [\"read\", \"write\"],"
    "   \"roles\": {\"reader\": {\"allow\": [\"docs:read\"]}}}},"
    " \"fields\": {\"keys\": [{\"id\": \"k1\", \"secret\": {\"value\": "
    "   \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\", \"encoding\": \"hex\"}}],"
    "   \"fernet\": {\"keys\": [{\"value\": \"cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\", \"encoding\": \"base64url\"}]}}}";

/* Signs claims, verifies the token at `at`; returns the reason, the result document in out. */
static int sign_and_verify(bitsec_runtime *rt, const char *claims, int64_t at, char *out, size_t cap, size_t *out_len) {
    char token[1024];
    size_t n = 0;
    int32_t reason = -1;
    CHECK(bitsec_token_sign(rt, claims, strlen(claims), NULL, 0, token, sizeof token, &n) == BITSEC_OK);
    CHECK(bitsec_verify_token(rt, token, n, at, &reason, out, cap, out_len) == BITSEC_OK);
    return reason;
}

static uint64_t decide(bitsec_runtime *rt, const char *claims, size_t len, const char *permission) {
    uint64_t d = 0;
    CHECK(bitsec_check_permission_claims(rt, claims, len, permission, strlen(permission), NULL, 0, &d) == BITSEC_OK);
    return d;
}

int main(void) {
    bitsec_runtime *rt = NULL;
    CHECK(bitsec_runtime_open(config, strlen(config), &rt) == BITSEC_OK);
    if (rt == NULL) { fprintf(stderr, "%s\n", bitsec_last_error()); return 1; }

    /* A token without scope: the verify output, passed on as it is, is judged by the role. */
    char doc[2048];
    size_t len = 0;
    CHECK(sign_and_verify(rt, "{\"sub\":\"u1\",\"role\":\"reader\",\"exp\":2000000000}", 1900000000, doc, sizeof doc, &len)
          == BITSEC_TOKEN_VALID);
    CHECK(strstr(doc, "\"scope\":null") != NULL);
    uint64_t d = decide(rt, doc, len, "docs:read");
    CHECK(BITSEC_PERM_ALLOWED(d) == 1 && BITSEC_PERM_REASON(d) == BITSEC_PERM_GRANTED);
    d = decide(rt, doc, len, "docs:write");
    CHECK(BITSEC_PERM_ALLOWED(d) == 0 && BITSEC_PERM_REASON(d) == BITSEC_PERM_NO_GRANT);

    /* A token with an empty scope carries no scope at all: denied, as for its own claims. */
    CHECK(sign_and_verify(rt, "{\"sub\":\"u1\",\"role\":\"reader\",\"exp\":2000000000,\"scope\":\"\"}", 1900000000, doc,
                          sizeof doc, &len) == BITSEC_TOKEN_VALID);
    d = decide(rt, doc, len, "docs:read");
    CHECK(BITSEC_PERM_ALLOWED(d) == 0 && BITSEC_PERM_REASON(d) == BITSEC_PERM_SCOPE_MISSING);

    /* nbf with a fraction: not valid at the whole second before it, valid from the instant on. */
    const char *frac = "{\"sub\":\"u1\",\"exp\":2000000000,\"nbf\":1900000000.5}";
    CHECK(sign_and_verify(rt, frac, 1900000000, doc, sizeof doc, &len) == BITSEC_TOKEN_NOT_YET_VALID);
    CHECK(sign_and_verify(rt, frac, 1900000001, doc, sizeof doc, &len) == BITSEC_TOKEN_VALID);
    char token[1024];
    size_t tn = 0;
    int32_t reason = -1;
    CHECK(bitsec_token_sign(rt, frac, strlen(frac), NULL, 0, token, sizeof token, &tn) == BITSEC_OK);
    CHECK(bitsec_verify_token_at(rt, token, tn, 1900000000, 400000000, &reason, NULL, 0, &len) == BITSEC_OK);
    CHECK(reason == BITSEC_TOKEN_NOT_YET_VALID);
    /* A valid token with no buffer: the size query, its decision still written. */
    CHECK(bitsec_verify_token_at(rt, token, tn, 1900000000, 600000000, &reason, NULL, 0, &len) == BITSEC_E_BUFFER_TOO_SMALL);
    CHECK(reason == BITSEC_TOKEN_VALID && len > 0);

    /* Fernet: ttl 0 is cryptography's ttl=0 (fresh within its own second), -1 no limit. */
    char fernet[256];
    size_t fn = 0;
    CHECK(bitsec_fernet_encrypt(rt, (const uint8_t *)"hello", 5, 1000000, fernet, sizeof fernet, &fn) == BITSEC_OK);
    uint8_t plain[64];
    size_t pn = 0;
    int32_t fr = -1;
    CHECK(bitsec_fernet_decrypt_ttl(rt, fernet, fn, 0, 1000000, plain, sizeof plain, &pn, &fr) == BITSEC_OK);
    CHECK(fr == BITSEC_FIELD_REASON_OK && pn == 5 && memcmp(plain, "hello", 5) == 0);
    CHECK(bitsec_fernet_decrypt_ttl(rt, fernet, fn, 0, 1000001, plain, sizeof plain, &pn, &fr) == BITSEC_OK);
    CHECK(fr == BITSEC_FIELD_REASON_EXPIRED);
    CHECK(bitsec_fernet_decrypt_ttl(rt, fernet, fn, BITSEC_FERNET_NO_TTL, 2000000000, plain, sizeof plain, &pn, &fr) == BITSEC_OK);
    CHECK(fr == BITSEC_FIELD_REASON_OK);
    CHECK(bitsec_fernet_decrypt_ttl(rt, fernet, fn, -2, 1000000, plain, sizeof plain, &pn, &fr) == BITSEC_E_INVALID_ARGUMENT);

    bitsec_runtime_close(rt);
    if (failures == 0) printf("c claims chain test: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
