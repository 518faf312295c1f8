/* stores: the same operations on the in-process store and on the host store (a shared-memory
 * region in a temporary directory), in one run, from C.
 *
 * Operations (10,000 distinct keys in rotation, every take allowed):
 *   rate-limit take (category "default");
 *   brute-force check (a key with one failure);
 *   token revoke (a new jti each time) and is_revoked (a revoked jti).
 * Prints one markdown row per operation: ns per call for each store (best of 5 rounds) and
 * the ratio host / process. */
#define _GNU_SOURCE
#include <bitsec.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KEYS 10000
#define AT 1900000000LL

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "stores_bench: %s failed: %s\n", what, bitsec_last_error());
    exit(1);
}

static char keys[KEYS][24];
static size_t key_len[KEYS];

static bitsec_runtime *open_rt(const char *store, const char *dir) {
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"allow_inline_secrets\": true,"
             " \"store\": {\"default\": \"%s\", \"host\": {\"name\": \"stores-bench-%d\", \"directory\": \"%s\"}},"
             " \"rate_limits\": {\"categories\": {\"default\": {\"capacity\": 1000000000, \"period_seconds\": 60}}},"
             " \"tokens\": {\"keys\": [{\"kid\": \"k\", \"alg\": \"HS256\", \"secret\": {\"value\": \"0123456789abcdef0123456789abcdef\"}}]}}",
             store, (int)getpid(), dir);
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(cfg, strlen(cfg), &rt) != BITSEC_OK) die(store);
    return rt;
}

typedef void (*op_fn)(bitsec_runtime *, int);

static void op_take(bitsec_runtime *rt, int i) {
    int64_t d[BITSEC_RATE_LIMIT_DECISION_LEN];
    if (bitsec_rate_limit_take(rt, "default", 7, keys[i % KEYS], key_len[i % KEYS], 1, 0, d) != BITSEC_OK) die("take");
    if (d[0] != 1) { fprintf(stderr, "stores_bench: a take was refused\n"); exit(1); }
}

static void op_check(bitsec_runtime *rt, int i) {
    int64_t s[BITSEC_BRUTEFORCE_STATUS_LEN];
    if (bitsec_bruteforce_check(rt, keys[i % KEYS], key_len[i % KEYS], 0, s) != BITSEC_OK) die("check");
}

static int revoke_counter = 0;
static void op_revoke(bitsec_runtime *rt, int i) {
    (void)i;
    char jti[40];
    int n = snprintf(jti, sizeof jti, "j-%d-%d", (int)getpid(), revoke_counter++);
    int32_t newly = 0;
    if (bitsec_token_revoke(rt, jti, (size_t)n, AT + 3600, AT, &newly) != BITSEC_OK) die("revoke");
}

static void op_is_revoked(bitsec_runtime *rt, int i) {
    int32_t revoked = 0;
    if (bitsec_token_is_revoked(rt, keys[i % KEYS], key_len[i % KEYS], AT, &revoked) != BITSEC_OK) die("is_revoked");
    if (!revoked) { fprintf(stderr, "stores_bench: a revoked jti was not found\n"); exit(1); }
}

static double measure(bitsec_runtime *rt, op_fn f, int iters) {
    double best = 1e99;
    for (int round = 0; round < 5; round++) {
        double t0 = now_s();
        for (int i = 0; i < iters; i++) f(rt, i);
        double ns = (now_s() - t0) * 1e9 / iters;
        if (ns < best) best = ns;
    }
    return best;
}

int main(void) {
    char dir[] = "/tmp/bitsec-stores-bench-XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    for (int i = 0; i < KEYS; i++) key_len[i] = (size_t)snprintf(keys[i], sizeof keys[i], "client-%d", i);
    bitsec_runtime *rts[2] = {open_rt("process", dir), open_rt("host", dir)};
    for (int s = 0; s < 2; s++) {
        for (int i = 0; i < KEYS; i++) {
            int64_t st[BITSEC_BRUTEFORCE_STATUS_LEN];
            int32_t newly = 0;
            if (bitsec_bruteforce_record_failure(rts[s], keys[i], key_len[i], 0, st) != BITSEC_OK) die("record_failure");
            if (bitsec_token_revoke(rts[s], keys[i], key_len[i], AT + 3600, AT, &newly) != BITSEC_OK) die("revoke");
        }
    }
    struct { const char *name; op_fn f; int iters; } ops[] = {
        {"rate-limit take", op_take, 200000},
        {"brute-force check", op_check, 200000},
        {"token revoke (new jti)", op_revoke, 20000},
        {"token is_revoked", op_is_revoked, 200000},
    };
    printf("## stores (C)\n\nns per call, best of 5 rounds; 10,000 keys in rotation; host = a shared-memory region\n\n");
    printf("| operation | process | host | host / process |\n|---|---|---|---|\n");
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        double p = measure(rts[0], ops[k].f, ops[k].iters);
        double h = measure(rts[1], ops[k].f, ops[k].iters);
        printf("| %s | %.0f | %.0f | %.2fx |\n", ops[k].name, p, h, h / p);
    }
    bitsec_runtime_close(rts[0]);
    bitsec_runtime_close(rts[1]);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "stores_bench: could not remove %s\n", dir);
    return 0;
}
