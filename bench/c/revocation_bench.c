/* revocation: bitsec_verify_token with revocation checks, in process (and in Redis when
 * BENCH_REDIS_PORT is set). Run it against two builds of libbitsec in one command (see
 * BENCHMARKS.md, "Revocation") to compare them: the scenarios use only exports both have,
 * except the session/subject ones, which run when the library has
 * bitsec_token_revoke_session (looked up with dlsym).
 *
 * Scenarios (HS256, verified-token cache on, so the signature is not what is measured):
 *   valid token, nothing revoked;
 *   valid token, 10,000 other jtis revoked;
 *   revoked token (its jti);
 *   valid token, 10,000 other sessions revoked (new exports only);
 *   revoked token (its session) (new exports only).
 * Prints one markdown row per scenario: ns per verification (best of 5 rounds). */
#define _GNU_SOURCE
#include <bitsec.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int32_t (*revoke_session_fn)(bitsec_runtime *, const char *, size_t, const char *, size_t, int64_t, int32_t *);

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "revocation_bench: %s failed: %s\n", what, bitsec_last_error());
    exit(1);
}

#define AT 1900000000LL

/* The value of "name":"..." in a pair document (no escapes in it). */
static void field(const char *doc, const char *name, char *out, size_t cap) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", name);
    const char *p = strstr(doc, pat);
    out[0] = 0;
    if (!p) return;
    p += strlen(pat);
    size_t n = 0;
    while (p[n] && p[n] != '"' && n + 1 < cap) { out[n] = p[n]; n++; }
    out[n] = 0;
}

static void pair(bitsec_runtime *rt, const char *sub, char *access, char *session) {
    char claims[128], doc[8192];
    size_t n = 0;
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\"}", sub);
    if (bitsec_token_issue_pair(rt, claims, strlen(claims), NULL, 0, AT, doc, sizeof doc, &n) != BITSEC_OK) die("issue_pair");
    field(doc, "access_token", access, 4096);
    field(doc, "session_id", session, 128);
}

static double measure(bitsec_runtime *rt, const char *token, int want, int iters) {
    double best = 1e99;
    size_t len = strlen(token);
    for (int round = 0; round < 5; round++) {
        double t0 = now_s();
        for (int i = 0; i < iters; i++) {
            int32_t reason = -1;
            size_t n = 0;
            /* Decision only: a valid token answers the size query, its reason still set. */
            int32_t rc = bitsec_verify_token(rt, token, len, AT + 10, &reason, NULL, 0, &n);
            if (rc != BITSEC_OK && rc != BITSEC_E_BUFFER_TOO_SMALL) die("verify");
            if (reason != want) { fprintf(stderr, "unexpected reason %d\n", reason); exit(1); }
        }
        double ns = (now_s() - t0) * 1e9 / iters;
        if (ns < best) best = ns;
    }
    return best;
}

int main(int argc, char **argv) {
    const char *label = argc > 1 ? argv[1] : "bitsec";
    const char *port = getenv("BENCH_REDIS_PORT");
    revoke_session_fn revoke_session = (revoke_session_fn)dlsym(RTLD_DEFAULT, "bitsec_token_revoke_session");
    if (getenv("BENCH_COMMON_ONLY")) revoke_session = NULL;  /* only the scenarios both builds run */
    if (!getenv("BENCH_NO_HEADER"))
        printf("| build | store | verification of | ns per call (best of 5) |\n|---|---|---|---|\n");
    for (int backend = 0; backend < (port ? 2 : 1); backend++) {
        char config[1024];
        char redis[256] = "";
        if (backend == 1)
            snprintf(redis, sizeof redis, "\"redis\": {\"host\": \"127.0.0.1\", \"port\": %s, \"key_prefix\": \"rbench:%ld:\"}, ",
                     port, (long)time(NULL));
        snprintf(config, sizeof config,
                 "{\"allow_inline_secrets\": true, %s\"tokens\": {\"keys\": [{\"kid\": \"hs\", \"alg\": \"HS256\", "
                 "\"secret\": {\"value\": \"0123456789abcdef0123456789abcdef\"}}], \"issuer\": \"iss\", \"audience\": \"aud\", "
                 "\"revocation\": {\"max_entries\": 100000}}}", redis);
        bitsec_runtime *rt = NULL;
        if (bitsec_runtime_open(config, strlen(config), &rt) != BITSEC_OK) die("bitsec_runtime_open");
        const char *where = backend ? "redis" : "memory";
        int iters = backend ? 20000 : 400000;
        if (getenv("BENCH_ITERS")) iters = atoi(getenv("BENCH_ITERS"));
        if (iters < 1) iters = 1;
        static char access[4096], session[128], victim[4096];
        pair(rt, "alice", access, session);
        printf("| %s | %s | valid, nothing revoked | %.0f |\n", label, where, measure(rt, access, 0, iters));
        /* 10,000 other jtis revoked (bare, as both builds can). */
        char jti[64];
        for (int i = 0; i < 10000; i++) {
            snprintf(jti, sizeof jti, "other-%d", i);
            if (bitsec_token_revoke(rt, jti, strlen(jti), AT + 3600, AT, NULL) != BITSEC_OK) die("revoke");
        }
        printf("| %s | %s | valid, 10,000 other jtis revoked | %.0f |\n", label, where, measure(rt, access, 0, iters));
        {
            /* A token without sub and a known jti, revoked by jti: the same call in both builds. */
            char claims[256];
            size_t n = 0;
            snprintf(claims, sizeof claims, "{\"iss\":\"iss\",\"aud\":\"aud\",\"exp\":%lld,\"iat\":%lld,\"jti\":\"victim\"}", AT + 1800, AT);
            if (bitsec_token_sign(rt, claims, strlen(claims), NULL, 0, victim, sizeof victim, &n) != BITSEC_OK) die("sign");
            if (bitsec_token_revoke(rt, "victim", 6, AT + 1800, AT, NULL) != BITSEC_OK) die("revoke");
        }
        printf("| %s | %s | revoked token (its jti) | %.0f |\n", label, where, measure(rt, victim, BITSEC_TOKEN_REVOKED, iters));
        if (revoke_session) {
            char sid[64];
            for (int i = 0; i < 10000; i++) {
                snprintf(sid, sizeof sid, "session-%d", i);
                if (revoke_session(rt, sid, strlen(sid), "alice", 5, AT, NULL) != BITSEC_OK) die("revoke_session");
            }
            printf("| %s | %s | valid, 10,000 other sessions revoked | %.0f |\n", label, where, measure(rt, access, 0, iters));
            static char s2[4096], sid2[128];
            pair(rt, "carol", s2, sid2);
            if (revoke_session(rt, sid2, strlen(sid2), "carol", 5, AT, NULL) != BITSEC_OK) die("revoke_session");
            printf("| %s | %s | revoked token (its session) | %.0f |\n", label, where, measure(rt, s2, BITSEC_TOKEN_REVOKED, iters));
        }
        bitsec_runtime_close(rt);
    }
    return 0;
}
