/* bench/c/login_guard_bench.c -- the login guard's cost from C: one login's two calls,
 * bitsec_login_guard_begin + bitsec_login_guard_succeeded (the common path: allowed, then
 * refunded), in process and, when BITSEC_TEST_REDIS_PORT is set (tools/redis_fixture.py run),
 * through Redis (four EVALSHAs: reserve client, reserve account, refund client, clear account).
 * Accounts rotate over 10,000 names and clients over 10,000 addresses. Prints a markdown table.
 *
 *   python3 tools/redis_fixture.py run -- build/bench/login_guard_bench
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
    fprintf(stderr, "login_guard_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

static double run(bitsec_runtime *rt, int n) {
    char account[32], client[32];
    int64_t d[BITSEC_LOGIN_GUARD_DECISION_LEN];
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_ns();
        for (int i = 0; i < n; i++) {
            int k = i % 10000;
            int al = snprintf(account, sizeof account, "user-%d", k);
            int cl = snprintf(client, sizeof client, "10.%d.%d.%d", k >> 16 & 255, k >> 8 & 255, k & 255);
            if (bitsec_login_guard_begin(rt, account, (size_t)al, client, (size_t)cl, 0, d) != BITSEC_OK) die("begin");
            if (!d[BITSEC_LOGIN_GUARD_D_ALLOWED]) die("refused");
            if (bitsec_login_guard_succeeded(rt, account, (size_t)al, client, (size_t)cl, d[BITSEC_LOGIN_GUARD_D_TICKET], 0) != BITSEC_OK)
                die("succeeded");
        }
        double per = (now_ns() - t0) / n;
        if (per < best) best = per;
    }
    return best;
}

int main(void) {
    const char *local = "{\"rate_limits\": {\"store\": \"local\"}}";
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(local, strlen(local), &rt) != BITSEC_OK) die("open");
    printf("| store | begin + succeeded |\n|---|---|\n");
    printf("| in process | %.0f ns |\n", run(rt, 200000));
    bitsec_runtime_close(rt);
    const char *port = getenv("BITSEC_TEST_REDIS_PORT");
    if (port) {
        char cfg[256];
        snprintf(cfg, sizeof cfg, "{\"redis\": {\"host\": \"127.0.0.1\", \"port\": %s}, \"rate_limits\": {}}", port);
        if (bitsec_runtime_open(cfg, strlen(cfg), &rt) != BITSEC_OK) die("open redis");
        printf("| redis (loopback) | %.1f us |\n", run(rt, 5000) / 1000.0);
        bitsec_runtime_close(rt);
    }
    return 0;
}
