/* bench/c/tables_bench.c -- the cost of the bounded in-process tables from C.
 *
 * ns per call, best of rounds, one thread:
 *   - bitsec_rate_limit_take on one existing key (the hot path);
 *   - bitsec_rate_limit_take over 4096 keys in turn, all held (max_keys 100000);
 *   - bitsec_rate_limit_take of new keys into a full table (max_keys 1024, every key new:
 *     each take makes room, the flood path);
 *   - bitsec_bruteforce_check of a key with failures;
 *   - bitsec_bruteforce_record_failure of new keys into a full table (max_keys 1024).
 * Run against another libbitsec (an older build) with LD_LIBRARY_PATH to compare in one run:
 * bench/tables_compare.sh. Prints a markdown table.
 */
#define _GNU_SOURCE
#include <bitsec.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "tables_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

static bitsec_runtime *open_rt(int max_keys) {
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"rate_limits\": {\"store\": \"local\", \"max_keys\": %d, \"categories\": "
             "{\"bench\": {\"capacity\": 1000000000, \"period_seconds\": 60}}}}", max_keys);
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(cfg, strlen(cfg), &rt) != BITSEC_OK) die("open");
    return rt;
}

static char keys[1 << 20][24];
static size_t key_len[1 << 20];

static void make_keys(int n, const char *prefix) {
    for (int i = 0; i < n; i++) key_len[i] = (size_t)snprintf(keys[i], sizeof keys[i], "%s%d.%d.%d", prefix, i >> 16, (i >> 8) & 255, i & 255);
}

/* mode 0: one key; 1: keys[0..nkeys) in turn; 2: failure check of one key; 3: failure of keys in turn */
static double run(bitsec_runtime *rt, int mode, int nkeys, long iters) {
    int64_t d[BITSEC_RATE_LIMIT_DECISION_LEN];
    int64_t st[BITSEC_BRUTEFORCE_STATUS_LEN];
    double t = now_ns();
    for (long i = 0; i < iters; i++) {
        int k = nkeys > 0 ? (int)(i % nkeys) : 0;
        int32_t rc;
        switch (mode) {
        case 0: rc = bitsec_rate_limit_take(rt, "bench", 5, "user-12345", 10, 1, 0, d); break;
        case 1: rc = bitsec_rate_limit_take(rt, "bench", 5, keys[k], key_len[k], 1, 0, d); break;
        case 2: rc = bitsec_bruteforce_check(rt, "user-12345", 10, 0, st); break;
        default: rc = bitsec_bruteforce_record_failure(rt, keys[k], key_len[k], 0, st); break;
        }
        if (rc != BITSEC_OK) die("call");
    }
    return (now_ns() - t) / (double)iters;
}

static double best(bitsec_runtime *rt, int mode, int nkeys, long iters, int rounds) {
    double b = 1e18;
    for (int r = 0; r < rounds; r++) {
        double ns = run(rt, mode, nkeys, iters);
        if (ns < b) b = ns;
    }
    return b;
}

int main(void) {
    bitsec_runtime *big = open_rt(100000), *small = open_rt(1024);
    int64_t st[BITSEC_BRUTEFORCE_STATUS_LEN];
    for (int i = 0; i < 3; i++) if (bitsec_bruteforce_record_failure(big, "user-12345", 10, 0, st) != BITSEC_OK) die("fail");
    make_keys(4096, "10.");
    run(big, 0, 0, 200000);
    double take1 = best(big, 0, 0, 500000, 9);
    run(big, 1, 4096, 4096);
    double take4k = best(big, 1, 4096, 409600, 9);
    double check = best(big, 2, 0, 500000, 9);
    /* Every key new: 1M distinct keys into a table of 1024. */
    make_keys(1 << 20, "172.");
    double flood = best(small, 1, 1 << 20, 1 << 20, 1);
    make_keys(1 << 20, "192.");
    double bfflood = best(small, 3, 1 << 20, 1 << 20, 1);
    printf("| call | ns |\n|---|---:|\n");
    printf("| rate_limit_take, one key | %.0f |\n", take1);
    printf("| rate_limit_take, 4096 held keys in turn | %.0f |\n", take4k);
    printf("| rate_limit_take, new keys into a full table (1024) | %.0f |\n", flood);
    printf("| bruteforce_check, one key | %.0f |\n", check);
    printf("| bruteforce_record_failure, new keys into a full table (1024) | %.0f |\n", bfflood);
    bitsec_runtime_close(big);
    bitsec_runtime_close(small);
    return 0;
}
