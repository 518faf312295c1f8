/* bench/c/micro_paths_bench.c -- bitsec's per-request micro paths from C, each measured
 * beside a floor taken in the same run, and reported as a distance to its goal.
 *
 * Floors:
 *   - a plain C function call through a function pointer in this binary (the absolute floor);
 *   - an exported call that takes no handle (bitsec_token_reason_name: PLT + Swift entry);
 *   - "the ABI entry": the cheapest export found that takes the runtime handle and does
 *     nothing real (handle check, enter/leave atomics, call counter, Swift error plumbing).
 *     Several candidates are measured and the cheapest is used; all are printed;
 *   - the raw OpenSSL HMAC-SHA256 of the token's signing input (pre-keyed EVP_MAC context
 *     duplicated per call, plus CRYPTO_memcmp against the decoded signature), for
 *     bitsec_verify_token with the verified-token cache off;
 *   - the three separate calls (verify with the document, bitsec_check_permission_claims on
 *     it, bitsec_rate_limit_take) in sequence, for bitsec_guard_check.
 *
 * Paths: HS256 bitsec_verify_token (cache hit on one token and on 10,000 distinct tokens in
 * rotation, cache off; decision only and with the claims document), the in-process
 * bitsec_rate_limit_take (one key, 10,000 keys), bitsec_check_permission (3, ~1,000 and
 * ~10,000 rules, 1,024 principals in rotation) and bitsec_guard_check.
 *
 * Tokens are signed here with OpenSSL's HMAC (not by bitsec) with iss/aud/exp/sub/roles
 * claims matching the configuration. Every call's result is checked (valid, granted,
 * allowed); a wrong result exits non-zero before any number is printed.
 *
 * Time: ns per call, the fastest of ROUNDS rounds; CPU time of the calling thread (what a
 * loaded, shared machine disturbs least) and wall time. The configuration keeps the
 * library's defaults otherwise (metrics.histograms "sampled"). Goals are targets, not checks.
 * Build/run: BENCH=micro_paths bash bench/run.sh */
#define _POSIX_C_SOURCE 200809L
#include <bitsec.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench_clock.h"
#include "synthetic_policy.h"

#define ROUNDS 7
#define NTOK 10000
#define NREQ 1024

static const char secret[] = "micro-bench-hs256-secret-32bytes";
static const char issuer[] = "https://auth.bench.example";
static const char audience[] = "bench-api";

static void die(const char *what) {
    fprintf(stderr, "micro_paths_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

/* A loop of n calls; returns 0 when every result was right. */
typedef int (*loop_fn)(void *arg, long n);
typedef struct { double cpu, wall; } timing;

/* Warm-up of n/10 calls, then the fastest of ROUNDS rounds of n calls (CPU and wall each). */
static timing measure(const char *name, loop_fn fn, void *arg, long n) {
    if (fn(arg, n / 10 + 1)) die(name);
    timing best = {1e18, 1e18};
    for (int r = 0; r < ROUNDS; r++) {
        double w0 = bench_wall_ns(), c0 = bench_cpu_ns();
        if (fn(arg, n)) die(name);
        double c = (bench_cpu_ns() - c0) / (double)n, w = (bench_wall_ns() - w0) / (double)n;
        if (c < best.cpu) best.cpu = c;
        if (w < best.wall) best.wall = w;
    }
    return best;
}

/* ---- tokens, signed here with OpenSSL ---- */

static size_t b64url(const unsigned char *in, size_t n, char *out) {
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18 & 63]; out[o++] = a[v >> 12 & 63]; out[o++] = a[v >> 6 & 63]; out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = a[v >> 18 & 63]; out[o++] = a[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = a[v >> 18 & 63]; out[o++] = a[v >> 12 & 63]; out[o++] = a[v >> 6 & 63];
    }
    out[o] = 0;
    return o;
}

typedef struct { char text[384]; size_t len; } token;

static void sign_token(token *t, int i, long now) {
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"hs\"}";
    char claims[256];
    int cn = snprintf(claims, sizeof claims,
                      "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"user-%05d\",\"roles\":[\"writer\"],\"exp\":%ld}",
                      issuer, audience, i, now + 7200);
    size_t n = b64url((const unsigned char *)header, sizeof header - 1, t->text);
    t->text[n++] = '.';
    n += b64url((const unsigned char *)claims, (size_t)cn, t->text + n);
    unsigned char mac[32];
    size_t ml = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, sizeof secret - 1,
                   (const unsigned char *)t->text, n, mac, sizeof mac, &ml) || ml != 32) die("EVP_Q_mac");
    t->text[n++] = '.';
    n += b64url(mac, ml, t->text + n);
    t->len = n;
}

/* ---- floors ---- */

static int plain_target(void *arg, long i) {
    __asm__ volatile("" ::: "memory");
    return arg != NULL && i >= 0;
}
static int (*volatile plain_fp)(void *, long) = plain_target;

static int loop_plain(void *arg, long n) {
    int (*f)(void *, long) = plain_fp;
    long ok = 0;
    for (long i = 0; i < n; i++) ok += f(arg, i);
    return ok != n;
}

static int loop_reason_name(void *arg, long n) {
    (void)arg;
    for (long i = 0; i < n; i++)
        if (bitsec_token_reason_name((int32_t)(i & 1)) == NULL) return 1;
    return 0;
}

typedef struct { bitsec_runtime *rt; } rt_arg;

static int loop_is_revoked(void *arg, long n) {
    bitsec_runtime *rt = ((rt_arg *)arg)->rt;
    for (long i = 0; i < n; i++) {
        int32_t rev = -1;
        if (bitsec_token_is_revoked(rt, "bench-jti", 9, 0, &rev) != BITSEC_OK || rev != 0) return 1;
    }
    return 0;
}

static int loop_origin_get(void *arg, long n) {
    bitsec_runtime *rt = ((rt_arg *)arg)->rt;
    for (long i = 0; i < n; i++) {
        int32_t reason = -1;
        if (bitsec_csrf_origin_check(rt, "GET", 3, NULL, 0, NULL, 0, &reason) != BITSEC_OK || reason != BITSEC_CSRF_VALID) return 1;
    }
    return 0;
}

static int loop_unknown_resource(void *arg, long n) {
    bitsec_runtime *rt = ((rt_arg *)arg)->rt;
    static const char principal[] = "u1\0writer\0\0";
    for (long i = 0; i < n; i++) {
        uint64_t d = 0;
        if (bitsec_check_permission(rt, principal, sizeof principal - 1, "zz:read", 7, NULL, 0, &d) != BITSEC_OK
            || BITSEC_PERM_REASON(d) != BITSEC_PERM_UNKNOWN_RESOURCE) return 1;
    }
    return 0;
}

static int loop_verify_too_large(void *arg, long n) {
    bitsec_runtime *rt = ((rt_arg *)arg)->rt;
    static char big[9000];
    if (!big[0]) memset(big, 'a', sizeof big);
    for (long i = 0; i < n; i++) {
        int32_t reason = -1;
        size_t len = 1;
        if (bitsec_verify_token(rt, big, sizeof big, 0, &reason, NULL, 0, &len) != BITSEC_OK
            || reason != BITSEC_TOKEN_TOO_LARGE || len != 0) return 1;
    }
    return 0;
}

static int loop_stats_size(void *arg, long n) {
    bitsec_runtime *rt = ((rt_arg *)arg)->rt;
    for (long i = 0; i < n; i++) {
        size_t len = 0;
        if (bitsec_permission_stats(rt, NULL, 0, &len) != BITSEC_E_BUFFER_TOO_SMALL || len == 0) return 1;
    }
    return 0;
}

static int loop_ping_unconfigured(void *arg, long n) {
    bitsec_runtime *rt = ((rt_arg *)arg)->rt;
    for (long i = 0; i < n; i++)
        if (bitsec_redis_ping(rt, NULL) != BITSEC_E_NOT_CONFIGURED) return 1;
    return 0;
}

/* The raw HMAC-SHA256 of one token's signing input, checked against its signature. */
typedef struct { EVP_MAC_CTX *keyed; const unsigned char *input; size_t input_len; unsigned char sig[32]; } raw_hmac;

static int loop_raw_hmac(void *arg, long n) {
    raw_hmac *r = arg;
    for (long i = 0; i < n; i++) {
        unsigned char mac[32];
        size_t ml = 0;
        EVP_MAC_CTX *c = EVP_MAC_CTX_dup(r->keyed);
        int ok = c && EVP_MAC_update(c, r->input, r->input_len) == 1 && EVP_MAC_final(c, mac, &ml, sizeof mac) == 1
              && ml == 32 && CRYPTO_memcmp(mac, r->sig, 32) == 0;
        EVP_MAC_CTX_free(c);
        if (!ok) return 1;
    }
    return 0;
}

/* ---- paths ---- */

typedef struct { bitsec_runtime *rt; const token *toks; int count; int with_doc; char out[2048]; } verify_arg;

static int loop_verify(void *arg, long n) {
    verify_arg *v = arg;
    int j = 0;
    for (long i = 0; i < n; i++) {
        const token *t = &v->toks[j];
        if (++j == v->count) j = 0;
        int32_t reason = -1;
        size_t len = 0;
        int rc = v->with_doc ? bitsec_verify_token(v->rt, t->text, t->len, 0, &reason, v->out, sizeof v->out, &len)
                             : bitsec_verify_token(v->rt, t->text, t->len, 0, &reason, NULL, 0, &len);
        if (rc != BITSEC_OK || reason != BITSEC_TOKEN_VALID || len == 0) return 1;
    }
    return 0;
}

typedef struct { bitsec_runtime *rt; char keys[NTOK][16]; size_t key_len[NTOK]; int count; } take_arg;

static int loop_take(void *arg, long n) {
    take_arg *a = arg;
    int j = 0;
    for (long i = 0; i < n; i++) {
        int64_t d[BITSEC_RATE_LIMIT_DECISION_LEN];
        int rc = bitsec_rate_limit_take(a->rt, "bench", 5, a->keys[j], a->key_len[j], 1, 0, d);
        if (++j == a->count) j = 0;
        if (rc != BITSEC_OK || d[BITSEC_RATE_LIMIT_D_ALLOWED] != 1) return 1;
    }
    return 0;
}

typedef struct { char principal[64]; size_t plen; char perm[32]; size_t permlen; } request;
typedef struct { bitsec_runtime *rt; request reqs[NREQ]; } perm_arg;

static int loop_permission(void *arg, long n) {
    perm_arg *p = arg;
    for (long i = 0; i < n; i++) {
        const request *q = &p->reqs[i & (NREQ - 1)];
        uint64_t d = 0;
        if (bitsec_check_permission(p->rt, q->principal, q->plen, q->perm, q->permlen, NULL, 0, &d) != BITSEC_OK
            || !BITSEC_PERM_ALLOWED(d)) return 1;
    }
    return 0;
}

typedef struct { bitsec_runtime *rt; const char *doc; size_t doc_len; } claims_arg;

static int loop_permission_claims(void *arg, long n) {
    claims_arg *c = arg;
    for (long i = 0; i < n; i++) {
        uint64_t d = 0;
        if (bitsec_check_permission_claims(c->rt, c->doc, c->doc_len, "docs:read", 9, NULL, 0, &d) != BITSEC_OK
            || !BITSEC_PERM_ALLOWED(d)) return 1;
    }
    return 0;
}

typedef struct { bitsec_runtime *rt; const token *toks; take_arg *keys; int count; char out[2048]; } guard_arg;

static int loop_guard(void *arg, long n) {
    guard_arg *g = arg;
    int j = 0;
    for (long i = 0; i < n; i++) {
        const token *t = &g->toks[j];
        bitsec_guard_result res;
        size_t len = 0;
        int rc = bitsec_guard_check(g->rt, t->text, t->len, NULL, 0, "docs:read", 9, NULL, 0, "bench", 5,
                                    g->keys->keys[j], g->keys->key_len[j], 1, 0, 0, &res, NULL, 0, &len);
        if (++j == g->count) j = 0;
        if (rc != BITSEC_OK || res.decision != BITSEC_GUARD_ALLOWED || res.http_status != 200 || len == 0) return 1;
    }
    return 0;
}

/* What a program does without the guard: verify (the document names the principal),
 * decide the permission for those claims, take from the bucket. */
static int loop_three_calls(void *arg, long n) {
    guard_arg *g = arg;
    int j = 0;
    for (long i = 0; i < n; i++) {
        const token *t = &g->toks[j];
        int32_t reason = -1;
        size_t len = 0;
        uint64_t d = 0;
        int64_t rl[BITSEC_RATE_LIMIT_DECISION_LEN];
        if (bitsec_verify_token(g->rt, t->text, t->len, 0, &reason, g->out, sizeof g->out, &len) != BITSEC_OK
            || reason != BITSEC_TOKEN_VALID) return 1;
        if (bitsec_check_permission_claims(g->rt, g->out, len, "docs:read", 9, NULL, 0, &d) != BITSEC_OK
            || !BITSEC_PERM_ALLOWED(d)) return 1;
        int rc = bitsec_rate_limit_take(g->rt, "bench", 5, g->keys->keys[j], g->keys->key_len[j], 1, 0, rl);
        if (++j == g->count) j = 0;
        if (rc != BITSEC_OK || rl[BITSEC_RATE_LIMIT_D_ALLOWED] != 1) return 1;
    }
    return 0;
}

/* The three cheapest calls, for a program that already holds the packed principal: verify
 * (decision only), bitsec_check_permission, take. */
static int loop_three_min(void *arg, long n) {
    guard_arg *g = arg;
    static const char principal[] = "user-00000\0writer\0\0";
    int j = 0;
    for (long i = 0; i < n; i++) {
        const token *t = &g->toks[j];
        int32_t reason = -1;
        size_t len = 0;
        uint64_t d = 0;
        int64_t rl[BITSEC_RATE_LIMIT_DECISION_LEN];
        if (bitsec_verify_token(g->rt, t->text, t->len, 0, &reason, NULL, 0, &len) != BITSEC_OK
            || reason != BITSEC_TOKEN_VALID) return 1;
        if (bitsec_check_permission(g->rt, principal, sizeof principal - 1, "docs:read", 9, NULL, 0, &d) != BITSEC_OK
            || !BITSEC_PERM_ALLOWED(d)) return 1;
        int rc = bitsec_rate_limit_take(g->rt, "bench", 5, g->keys->keys[j], g->keys->key_len[j], 1, 0, rl);
        if (++j == g->count) j = 0;
        if (rc != BITSEC_OK || rl[BITSEC_RATE_LIMIT_D_ALLOWED] != 1) return 1;
    }
    return 0;
}

/* ---- policies ---- */

static unsigned long long rng_state = 42;
static unsigned long long rnd(void) {
    unsigned long long z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The generator of bench/c/permissions_bench.c, recording one plain grant per role. */
static char *synthetic(int roles, int rules, char (*granted)[32]) {
    return synthetic_policy(roles, rules, rnd, "", "", granted);
}

static const char small_policy[] =
    "{\"resources\": [\"docs\"], \"actions\": [\"read\", \"write\", \"delete\"],"
    " \"roles\": {\"reader\": {\"allow\": [\"docs:read\"]},"
    "            \"writer\": {\"inherits\": [\"reader\"], \"allow\": [\"docs:write\"]},"
    "            \"admin\": {\"inherits\": [\"writer\"], \"allow\": [\"docs:delete\"]}}}";

static bitsec_runtime *open_rt(const char *policy, int cache_size) {
    size_t cap = strlen(policy) + 2048;
    char *config = malloc(cap);
    if (!config) exit(1);
    int n = snprintf(config, cap,
        "{\"allow_inline_secrets\": true,"
        " \"tokens\": {\"keys\": [{\"kid\": \"hs\", \"alg\": \"HS256\", \"secret\": {\"value\": \"%s\"}}],"
        "   \"issuer\": \"%s\", \"audience\": \"%s\", \"cache_size\": %d, \"revocation\": {\"store\": \"process\"}},"
        " \"permissions\": {\"policy\": %s},"
        " \"rate_limits\": {\"store\": \"process\", \"categories\": {\"bench\": {\"capacity\": 1000000000, \"period_seconds\": 1}}},"
        " \"csrf\": {\"key\": {\"value\": \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\", \"encoding\": \"hex\"}}}",
        secret, issuer, audience, cache_size, policy);
    bitsec_runtime *rt = NULL;
    if (n < 0 || (size_t)n >= cap || bitsec_runtime_open(config, (size_t)n, &rt) != BITSEC_OK) die("bitsec_runtime_open");
    free(config);
    return rt;
}

/* A number from a JSON or text document after `key` (-1 when absent). */
static long long number_after(const char *doc, const char *key) {
    const char *p = strstr(doc, key);
    return p ? atoll(p + strlen(key)) : -1;
}

static long long policy_rules(bitsec_runtime *rt) {
    char stats[2048];
    size_t sl = 0;
    if (bitsec_permission_stats(rt, stats, sizeof stats, &sl) != BITSEC_OK) die("bitsec_permission_stats");
    return number_after(stats, "\"rules\":");
}

/* A permission runtime: the 3-rule policy (roles == 0) or a synthetic one; 1,024 requests of
 * distinct principals, each for a permission its role holds. */
static bitsec_runtime *permission_rt(int roles, int rules, perm_arg *p) {
    static char granted[1000][32];
    const char *small_roles[] = {"reader", "writer", "admin"}, *small_perms[] = {"docs:read", "docs:write", "docs:delete"};
    char *policy = roles ? synthetic(roles, rules, granted) : NULL;
    p->rt = open_rt(policy ? policy : small_policy, 1024);
    free(policy);
    for (int i = 0; i < NREQ; i++) {
        request *q = &p->reqs[i];
        if (roles) {
            int r = (int)(rnd() % (unsigned)roles);
            q->plen = (size_t)snprintf(q->principal, sizeof q->principal, "user-%d%crole%d%c%c", i, 0, r, 0, 0);
            q->permlen = (size_t)snprintf(q->perm, sizeof q->perm, "%s", granted[r]);
        } else {
            q->plen = (size_t)snprintf(q->principal, sizeof q->principal, "user-%d%c%s%c%c", i, 0, small_roles[i % 3], 0, 0);
            q->permlen = (size_t)snprintf(q->perm, sizeof q->perm, "%s", small_perms[i % 3]);
        }
    }
    return p->rt;
}

/* ---- the table ---- */

static void row(const char *path, timing t, const char *floor_name, double floor_ns, double goal_ns, const char *goal) {
    char dist[96];
    const char *unit = floor_ns == goal_ns ? floor_name : "the goal";
    if (goal_ns <= 0) snprintf(dist, sizeof dist, "—");
    else if (t.cpu <= goal_ns) snprintf(dist, sizeof dist, "met (%.2f× %s)", t.cpu / goal_ns, unit);
    else snprintf(dist, sizeof dist, "%.1f× %s", t.cpu / goal_ns, unit);
    printf("| %s | %.0f | %.0f | %.0f (%s) | %.0f | %s | %s |\n", path, t.cpu, t.wall, floor_ns, floor_name,
           t.cpu - floor_ns, goal, dist);
}

int main(void) {
    long now = (long)time(NULL);
    static token toks[NTOK];
    for (int i = 0; i < NTOK; i++) sign_token(&toks[i], i, now);

    /* Runtime A: cache on, sized so the 10,000 tokens all stay in it. B: cache off. */
    bitsec_runtime *rt = open_rt(small_policy, 16384), *rt_nocache = open_rt(small_policy, 0);
    rt_arg ra = {rt};

    /* Floors. */
    timing plain = measure("plain call", loop_plain, &ra, 20000000);
    timing noh = measure("bitsec_token_reason_name", loop_reason_name, NULL, 5000000);
    struct { const char *name; loop_fn fn; long n; timing t; } cand[] = {
        {"`bitsec_token_is_revoked` (a jti never revoked)", loop_is_revoked, 100000, {0, 0}},
        {"`bitsec_csrf_origin_check` (GET: safe method)", loop_origin_get, 100000, {0, 0}},
        {"`bitsec_check_permission` (undeclared resource)", loop_unknown_resource, 200000, {0, 0}},
        {"`bitsec_verify_token` (a token over max_token_bytes: refused before decoding)", loop_verify_too_large, 200000, {0, 0}},
        {"`bitsec_permission_stats` size query (BITSEC_E_BUFFER_TOO_SMALL)", loop_stats_size, 100000, {0, 0}},
        {"`bitsec_redis_ping` without a redis section (BITSEC_E_NOT_CONFIGURED)", loop_ping_unconfigured, 100000, {0, 0}},
    };
    int ncand = (int)(sizeof cand / sizeof cand[0]), cheapest = 0;
    for (int i = 0; i < ncand; i++) {
        cand[i].t = measure(cand[i].name, cand[i].fn, &ra, cand[i].n);
        if (cand[i].t.cpu < cand[cheapest].t.cpu) cheapest = i;
    }
    double abi = cand[cheapest].t.cpu;

    /* Tokens. Warm the cache with all 10,000 tokens first. */
    verify_arg *v = calloc(1, sizeof *v);
    if (!v) exit(1);
    *v = (verify_arg){.rt = rt, .toks = toks, .count = NTOK, .with_doc = 0};
    if (loop_verify(v, NTOK)) die("verify warm-up");
    timing hit_rot = measure("verify hit rotation", loop_verify, v, 100000);
    v->with_doc = 1;
    timing hit_rot_doc = measure("verify hit rotation doc", loop_verify, v, 100000);
    v->count = 1;
    timing hit_one_doc = measure("verify hit doc", loop_verify, v, 100000);
    v->with_doc = 0;
    timing hit_one = measure("verify hit", loop_verify, v, 100000);
    v->rt = rt_nocache;
    timing miss = measure("verify cache off", loop_verify, v, 30000);
    v->with_doc = 1;
    timing miss_doc = measure("verify cache off doc", loop_verify, v, 30000);

    raw_hmac rh;
    const char *dot = strrchr(toks[0].text, '.');
    rh.input = (const unsigned char *)toks[0].text;
    rh.input_len = (size_t)(dot - toks[0].text);
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, sizeof secret - 1, rh.input, rh.input_len, rh.sig, 32, NULL)) die("EVP_Q_mac");
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    rh.keyed = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0), OSSL_PARAM_construct_end()};
    if (!rh.keyed || !EVP_MAC_init(rh.keyed, (const unsigned char *)secret, sizeof secret - 1, params)) die("EVP_MAC_init");
    timing raw = measure("raw HMAC", loop_raw_hmac, &rh, 100000);

    /* The document of the one token, for bitsec_check_permission_claims. */
    char doc[2048];
    size_t doc_len = 0;
    int32_t reason = -1;
    if (bitsec_verify_token(rt, toks[0].text, toks[0].len, 0, &reason, doc, sizeof doc, &doc_len) != BITSEC_OK || reason != BITSEC_TOKEN_VALID) die("verify");

    /* Rate limits. */
    take_arg *ta = calloc(1, sizeof *ta);
    if (!ta) exit(1);
    ta->rt = rt;
    for (int i = 0; i < NTOK; i++) ta->key_len[i] = (size_t)snprintf(ta->keys[i], sizeof ta->keys[i], "client-%05d", i);
    ta->count = 1;
    timing take_one = measure("take one key", loop_take, ta, 400000);
    ta->count = NTOK;
    timing take_rot = measure("take 10000 keys", loop_take, ta, 400000);

    /* Permissions. */
    perm_arg *pa = calloc(1, sizeof *pa);
    if (!pa) exit(1);
    long long nrules[3];
    timing perm[3];
    int shapes[3][2] = {{0, 3}, {100, 1000}, {1000, 10000}};
    for (int s = 0; s < 3; s++) {
        bitsec_runtime *prt = permission_rt(shapes[s][0], shapes[s][1], pa);
        nrules[s] = policy_rules(prt);
        perm[s] = measure("bitsec_check_permission", loop_permission, pa, 400000);
        bitsec_runtime_close(prt);
    }
    claims_arg ca = {rt, doc, doc_len};
    timing perm_claims = measure("bitsec_check_permission_claims", loop_permission_claims, &ca, 200000);

    /* Guard vs the three calls, one token and key; then 10,000 of each in rotation. */
    guard_arg *ga = calloc(1, sizeof *ga);
    if (!ga) exit(1);
    *ga = (guard_arg){.rt = rt, .toks = toks, .keys = ta, .count = 1};
    timing guard_one = measure("bitsec_guard_check", loop_guard, ga, 50000);
    timing three_one = measure("three calls", loop_three_calls, ga, 50000);
    timing three_min = measure("three cheapest calls", loop_three_min, ga, 50000);
    ga->count = NTOK;
    timing guard_rot = measure("bitsec_guard_check rotation", loop_guard, ga, 50000);
    timing three_rot = measure("three calls rotation", loop_three_calls, ga, 50000);

    /* The 10,000 tokens stayed in the cache: no eviction during the run. */
    char *metrics = malloc(1 << 20);
    size_t ml = 0;
    if (!metrics || bitsec_metrics_text(rt, metrics, 1 << 20, &ml) != BITSEC_OK) die("bitsec_metrics_text");
    long long evictions = number_after(metrics, "bitsec_table_evictions_total{table=\"token_cache\"}");
    long long entries = number_after(metrics, "bitsec_table_entries{table=\"token_cache\"}");
    if (evictions != 0 || entries < NTOK) {
        fprintf(stderr, "micro_paths_bench: token cache entries %lld, evictions %lld: the rotation was not all hits\n", entries, evictions);
        return 1;
    }
    free(metrics);

    printf("## Micro paths (C): each path beside its floor, and its distance to the goal\n\n");
    printf("%s; one thread; ns per call, the fastest of %d rounds: CPU time of the thread (the column the goal is judged on) "
           "and wall time. HS256 tokens with iss, aud, exp, sub and roles, signed with OpenSSL; results checked on every call. "
           "\"over floor\" = bitsec CPU ns − floor ns.\n\n", OpenSSL_version(OPENSSL_VERSION), ROUNDS);
    printf("| path | bitsec ns | wall ns | floor ns | over floor | goal | distance |\n|---|---:|---:|---|---:|---|---|\n");
    const char *af = "ABI entry";
    row("`bitsec_verify_token` HS256, cache hit, one token, decision only", hit_one, af, abi, 1500, "≤ 1.5 µs");
    row("`bitsec_verify_token` HS256, cache hit, one token, with the claims document", hit_one_doc, af, abi, 1500, "≤ 1.5 µs");
    row("`bitsec_verify_token` HS256, cache hit, 10,000 tokens in rotation, decision only", hit_rot, af, abi, 1500, "≤ 1.5 µs");
    row("`bitsec_verify_token` HS256, cache hit, 10,000 tokens in rotation, with the document", hit_rot_doc, af, abi, 1500, "≤ 1.5 µs");
    row("`bitsec_verify_token` HS256, cache off, decision only", miss, "raw HMAC", raw.cpu, 1500, "≤ 1.5 µs");
    row("`bitsec_verify_token` HS256, cache off, with the document", miss_doc, "raw HMAC", raw.cpu, 1500, "≤ 1.5 µs");
    row("`bitsec_rate_limit_take`, in process, one key", take_one, af, abi, 60, "≤ 60 ns");
    row("`bitsec_rate_limit_take`, in process, 10,000 keys in rotation", take_rot, af, abi, 60, "≤ 60 ns");
    for (int s = 0; s < 3; s++) {
        char label[160];
        char rules[32];
        if (nrules[s] >= 1000) snprintf(rules, sizeof rules, "%lld,%03lld", nrules[s] / 1000, nrules[s] % 1000);
        else snprintf(rules, sizeof rules, "%lld", nrules[s]);
        snprintf(label, sizeof label, "`bitsec_check_permission`, %s rules%s, 1,024 principals", rules,
                 s == 0 ? " (3 roles)" : s == 1 ? " (100 roles)" : " (1,000 roles)");
        row(label, perm[s], af, abi, 70, "≤ 70 ns, flat");
    }
    row("`bitsec_check_permission_claims`, the verify document (used by the three separate calls)", perm_claims, af, abi, 0, "—");
    char goal[64];
    snprintf(goal, sizeof goal, "≤ the three calls");
    row("`bitsec_guard_check` (cache hit + permission + take), one token and key", guard_one, "the three calls", three_one.cpu,
        three_one.cpu, goal);
    row("`bitsec_guard_check`, 10,000 tokens and keys in rotation", guard_rot, "the three calls", three_rot.cpu, three_rot.cpu, goal);
    printf("\nFloors in the same run: plain C call through a function pointer %.1f ns (wall %.1f); "
           "raw OpenSSL HMAC-SHA256 of the signing input (EVP_MAC_CTX_dup + update + final + CRYPTO_memcmp) %.0f ns (wall %.0f); "
           "the three calls (verify with the document + `bitsec_check_permission_claims` + take) %.0f ns with one token, "
           "%.0f ns with 10,000 (wall %.0f, %.0f); the three cheapest calls, for a program that already holds the packed principal "
           "(verify decision only + `bitsec_check_permission` + take, one token) %.0f ns (wall %.0f): the guard is %.2f× that; "
           "`bitsec_token_reason_name` (an export without handle) %.1f ns.\n",
           plain.cpu, plain.wall, raw.cpu, raw.wall, three_one.cpu, three_rot.cpu, three_one.wall, three_rot.wall,
           three_min.cpu, three_min.wall, guard_one.cpu / three_min.cpu, noh.cpu);
    printf("\nABI entry candidates (exports taking the runtime handle), ns CPU / wall:\n\n");
    for (int i = 0; i < ncand; i++)
        printf("- %s: %.0f / %.0f%s\n", cand[i].name, cand[i].t.cpu, cand[i].t.wall, i == cheapest ? " (the cheapest: the ABI entry floor)" : "");
    printf("\n**The ABI entry costs at most %.0f ns**: the cheapest export taking the handle (%s) %.0f ns minus the plain C call %.1f ns "
           "(an export without a handle costs %.1f ns over the plain call).\n",
           abi - plain.cpu, cand[cheapest].name, abi, plain.cpu, noh.cpu - plain.cpu);

    bitsec_runtime_close(rt);
    bitsec_runtime_close(rt_nocache);
    EVP_MAC_CTX_free(rh.keyed);
    EVP_MAC_free(mac);
    free(v); free(ta); free(pa); free(ga);
    return 0;
}
