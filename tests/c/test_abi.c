/* Compiled as C11 and as C++17, with gcc and clang, at -Wall -Wextra -Werror; linked against
 * libbitsec.so and run. Exercises the header's declarations and the library's contract. */
#include <bitsec.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

/* A deprecated alias still links and answers as the function it names (the one place the
 * tests call an alias: its deprecation warning is silenced here only, -Werror stays on). */
static void deprecated_alias_still_works(void) {
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif
    for (int32_t code = -1; code < 20; code++)
        CHECK(strcmp(bitsec_permission_reason(code), bitsec_permission_reason_name(code)) == 0);
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

/* Sessions from C: create, validate (a decision), rotate, a hijack, list and revoke. */
static void sessions_work(void) {
    const char *cfg = "{\"sessions\": {\"binding\": \"client_address\"}}";
    bitsec_runtime *rt = NULL;
    CHECK(bitsec_runtime_open(cfg, strlen(cfg), &rt) == BITSEC_OK);
    char token[BITSEC_SESSION_TOKEN_LEN + 1], id[BITSEC_SESSION_ID_LEN + 1];
    const char *addr = "203.0.113.7";
    CHECK(bitsec_session_create(rt, "alice", 5, NULL, 0, addr, strlen(addr), NULL, 0, 0, token, id) == BITSEC_OK);
    CHECK(strlen(token) == BITSEC_SESSION_TOKEN_LEN && strlen(id) == BITSEC_SESSION_ID_LEN);
    int32_t reason = -1;
    char info[BITSEC_SESSION_INFO_MAX_BYTES];
    size_t len = 0;
    CHECK(bitsec_session_validate(rt, token, strlen(token), addr, strlen(addr), NULL, 0, 0, &reason, info, sizeof info, &len) == BITSEC_OK);
    CHECK(reason == BITSEC_SESSION_REASON_VALID && len > 0 && strstr(info, "\"user\":\"alice\"") != NULL);
    char token2[BITSEC_SESSION_TOKEN_LEN + 1], id2[BITSEC_SESSION_ID_LEN + 1];
    CHECK(bitsec_session_rotate(rt, token, strlen(token), addr, strlen(addr), NULL, 0, 0, &reason, token2, id2) == BITSEC_OK);
    CHECK(reason == BITSEC_SESSION_REASON_VALID && strcmp(token, token2) != 0);
    CHECK(bitsec_session_validate(rt, token, strlen(token), addr, strlen(addr), NULL, 0, 0, &reason, NULL, 0, &len) == BITSEC_OK);
    CHECK(reason == BITSEC_SESSION_REASON_UNKNOWN);
    CHECK(bitsec_session_list(rt, "alice", 5, NULL, 0, 0, NULL, 0, &len) == BITSEC_E_BUFFER_TOO_SMALL);
    CHECK(len > 0 && len < sizeof info);
    CHECK(bitsec_session_list(rt, "alice", 5, NULL, 0, 0, info, sizeof info, &len) == BITSEC_OK);
    CHECK(strstr(info, id2) != NULL);
    CHECK(bitsec_session_validate(rt, token2, strlen(token2), "198.51.100.1", 12, NULL, 0, 0, &reason, NULL, 0, &len) == BITSEC_OK);
    CHECK(reason == BITSEC_SESSION_REASON_BINDING_MISMATCH);
    int64_t n = -1;
    CHECK(bitsec_session_revoke_user(rt, "alice", 5, NULL, 0, 0, &n) == BITSEC_OK && n == 0);
    int32_t ended = -1;
    CHECK(bitsec_session_revoke(rt, id2, strlen(id2), 0, &ended) == BITSEC_OK && ended == 0);
    bitsec_runtime_close(rt);
}

/* CSRF from C: a synchronizer token issued, accepted for its session, refused for another;
 * the origin check refuses a foreign origin; the reason names are the 403 details. */
static void csrf_from_c(void) {
    const char *cfg = "{\"allow_inline_secrets\": true, \"csrf\": {\"key\": {\"value\": "
                      "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\", \"encoding\": \"hex\"},"
                      " \"allowed_origins\": [\"https://app.example.com\"]}}";
    bitsec_runtime *rt = NULL;
    CHECK(bitsec_runtime_open(cfg, strlen(cfg), &rt) == BITSEC_OK);
    char tok[BITSEC_CSRF_TOKEN_BYTES + 1];
    size_t n = 0;
    CHECK(bitsec_csrf_token_issue(rt, "session-1", 9, 0, NULL, 0, &n) == BITSEC_E_BUFFER_TOO_SMALL);
    CHECK(n == BITSEC_CSRF_TOKEN_BYTES);
    CHECK(bitsec_csrf_token_issue(rt, "session-1", 9, 0, tok, sizeof tok, &n) == BITSEC_OK);
    CHECK(n == BITSEC_CSRF_TOKEN_BYTES && tok[n] == '\0');
    int32_t reason = -1;
    CHECK(bitsec_csrf_token_verify(rt, "session-1", 9, tok, n, 0, &reason) == BITSEC_OK && reason == BITSEC_CSRF_VALID);
    CHECK(bitsec_csrf_token_verify(rt, "session-2", 9, tok, n, 0, &reason) == BITSEC_OK && reason == BITSEC_CSRF_INVALID);
    CHECK(strcmp(bitsec_csrf_reason_name(reason), "csrf_token_invalid") == 0);
    CHECK(bitsec_csrf_origin_check(rt, "POST", 4, "https://evil.example", 20, NULL, 0, &reason) == BITSEC_OK);
    CHECK(reason == BITSEC_CSRF_ORIGIN_NOT_ALLOWED);
    bitsec_runtime_close(rt);
}

/* bitsec_guard_check from C: the result struct's fixed layout, and one rate-limited
 * request through it (no token: the take alone). */
static void guard_check_from_c(void) {
    CHECK(sizeof(bitsec_guard_result) == BITSEC_GUARD_RESULT_BYTES);
    CHECK(offsetof(bitsec_guard_result, rate_reason) == 20);
    CHECK(offsetof(bitsec_guard_result, rate_limit) == 24);
    CHECK(offsetof(bitsec_guard_result, rate_flags) == 56);
    const char *cfg = "{\"rate_limits\": {\"categories\": {\"default\": {\"capacity\": 1, \"period_seconds\": 60}}}}";
    bitsec_runtime *rt = NULL;
    CHECK(bitsec_runtime_open(cfg, strlen(cfg), &rt) == BITSEC_OK);
    bitsec_guard_result g;
    size_t n = 99;
    CHECK(bitsec_guard_check(rt, NULL, 0, NULL, 0, NULL, 0, NULL, 0, "default", 7, "ip:1", 4, 1, 0, 0,
                             &g, NULL, 0, &n) == BITSEC_OK);
    CHECK(g.decision == BITSEC_GUARD_ALLOWED && g.http_status == 200 && n == 0);
    CHECK(g.token_reason == BITSEC_GUARD_NOT_CHECKED && g.permission_reason == BITSEC_GUARD_NOT_CHECKED);
    CHECK(g.rate_limit == 1 && g.rate_remaining == 0 && g.rate_retry_after == 0);
    CHECK(bitsec_guard_check(rt, NULL, 0, NULL, 0, NULL, 0, NULL, 0, "default", 7, "ip:1", 4, 1, 0, 0,
                             &g, NULL, 0, &n) == BITSEC_OK);
    CHECK(g.decision == BITSEC_GUARD_RATE_LIMITED && g.http_status == 429 && g.rate_retry_after >= 1);
    /* a permission without a token is an error, not a decision */
    CHECK(bitsec_guard_check(rt, NULL, 0, NULL, 0, "a:b", 3, NULL, 0, NULL, 0, NULL, 0, 1, 0, 0,
                             &g, NULL, 0, &n) == BITSEC_E_INVALID_ARGUMENT);
    /* the same through the two structs of bitsec_guard_check_request: another key's bucket */
    CHECK(sizeof(bitsec_guard_route) == BITSEC_GUARD_ROUTE_BYTES);
    CHECK(sizeof(bitsec_guard_request) == BITSEC_GUARD_REQUEST_BYTES);
    CHECK(offsetof(bitsec_guard_route, scopes_len) == 8 && offsetof(bitsec_guard_route, permission) == 16);
    CHECK(offsetof(bitsec_guard_route, permission_len) == 24 && offsetof(bitsec_guard_route, category) == 32);
    CHECK(offsetof(bitsec_guard_route, category_len) == 40 && offsetof(bitsec_guard_route, cost) == 48);
    CHECK(offsetof(bitsec_guard_route, flags) == 56 && offsetof(bitsec_guard_route, reserved) == 60);
    CHECK(offsetof(bitsec_guard_request, token_len) == 8 && offsetof(bitsec_guard_request, key) == 16);
    CHECK(offsetof(bitsec_guard_request, key_len) == 24 && offsetof(bitsec_guard_request, context) == 32);
    CHECK(offsetof(bitsec_guard_request, context_len) == 40 && offsetof(bitsec_guard_request, at) == 48);
    CHECK(offsetof(bitsec_guard_request, out_buf) == 56 && offsetof(bitsec_guard_request, out_cap) == 64);
    CHECK(offsetof(bitsec_guard_request, out_len) == 72 && offsetof(bitsec_guard_request, result) == 80);
    bitsec_guard_route route;
    bitsec_guard_request req;
    memset(&route, 0, sizeof route);
    memset(&req, 0, sizeof req);
    route.category = "default";
    route.category_len = 7;
    route.cost = 1;
    req.key = "ip:2";
    req.key_len = 4;
    CHECK(bitsec_guard_check_request(rt, &route, &req) == BITSEC_OK);
    CHECK(req.result.decision == BITSEC_GUARD_ALLOWED && req.result.rate_remaining == 0 && req.out_len == 0);
    CHECK(bitsec_guard_check_request(rt, &route, &req) == BITSEC_OK);
    CHECK(req.result.decision == BITSEC_GUARD_RATE_LIMITED && req.result.http_status == 429);
    route.reserved = 1;
    CHECK(bitsec_guard_check_request(rt, &route, &req) == BITSEC_E_INVALID_ARGUMENT);
    bitsec_runtime_close(rt);
}

int main(void) {
    sessions_work();
    csrf_from_c();
    deprecated_alias_still_works();
    guard_check_from_c();
    CHECK(bitsec_version_number() == BITSEC_VERSION_NUMBER);
    CHECK(bitsec_abi_version() == BITSEC_ABI_VERSION);
    CHECK(strcmp(bitsec_version_string(), BITSEC_VERSION_STRING) == 0);
    CHECK(strcmp(bitsec_strerror(BITSEC_E_BUFFER_TOO_SMALL), "output buffer too small") == 0);
    CHECK(strcmp(bitsec_strerror(9999), "unknown status") == 0);

    bitsec_runtime *rt = NULL;
    const char *bad = "{\"redis\": {\"hots\": 1}}";
    CHECK(bitsec_runtime_open(bad, strlen(bad), &rt) == BITSEC_E_CONFIG);
    CHECK(rt == NULL);
    CHECK(strcmp(bitsec_last_error(), "unknown field redis.hots") == 0);
    CHECK(bitsec_runtime_open(NULL, 5, &rt) == BITSEC_E_INVALID_ARGUMENT);
    CHECK(bitsec_runtime_open("{}", (size_t)-1, &rt) == BITSEC_E_TOO_LARGE);

    const char *cfg = "{\"redis\": {\"port\": 6399}}";
    CHECK(bitsec_runtime_open(cfg, strlen(cfg), &rt) == BITSEC_OK);
    CHECK(rt != NULL);

    size_t need = 0;
    CHECK(bitsec_runtime_describe(rt, NULL, 0, &need) == BITSEC_E_BUFFER_TOO_SMALL);
    CHECK(need > 0);
    char *buf = (char *)malloc(need + 1);
    size_t len = 0;
    CHECK(bitsec_runtime_describe(rt, buf, need + 1, &len) == BITSEC_OK);
    CHECK(len == need && buf[len] == '\0');
    CHECK(strstr(buf, "127.0.0.1:6399") != NULL);
    free(buf);

    char *json = NULL;
    CHECK(bitsec_runtime_describe_alloc(rt, &json, &len) == BITSEC_OK);
    CHECK(json != NULL && strlen(json) == len);
    bitsec_free(json);

    unsigned char rnd[32];
    memset(rnd, 0, sizeof rnd);
    CHECK(bitsec_random_bytes(rnd, sizeof rnd) == BITSEC_OK);
    int nonzero = 0;
    for (size_t i = 0; i < sizeof rnd; i++) nonzero |= rnd[i];
    CHECK(nonzero != 0);

    bitsec_runtime_close(rt);
    bitsec_runtime_close(NULL);
    CHECK(bitsec_runtime_describe(rt, NULL, 0, &need) == BITSEC_E_CLOSED);

    if (failures == 0) printf("c abi test: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
