/* bench/c/abi_paths_bench.c -- the hot paths through the C ABI, one at a time, for
 * instruction counts (valgrind --tool=callgrind) of two library builds on the same inputs.
 *
 *   abi_paths_bench OP N     runs OP N times after 1000 warm-up calls; OP is one of
 *     verify   bitsec_verify_token, HS256, decision and claims document (cache on)
 *     permit   bitsec_check_permission, a role grant of a 3-rule policy
 *     take     bitsec_rate_limit_take, one key, in process
 *     encrypt  bitsec_encrypt_field, 32 bytes
 *     emit     bitsec_audit_emit, a small event (a file sink in /tmp, batched: validation,
 *              queue, the writer's chain and write; removed at the end)
 *
 * BITSEC_BENCH_HISTOGRAMS=on|sampled|off adds {"metrics": {"histograms": ...}} to the
 * configuration (unset: the library's default; an older build refuses the field). The time
 * per call is printed to stdout at the end: "OP <cpu ns> ns/call (cpu), <wall ns> wall": CPU
 * time of the process (every thread) is what a loaded, shared machine disturbs least.
 *
 * bench/abi_paths_compare.sh runs it under callgrind with N and 2N against two library
 * directories and prints instructions per call, (count(2N) - count(N)) / N: setup cancels
 * out. Only functions whose names did not change since 0.1.0 are called, so one binary runs
 * against an older build too.
 */
#define _GNU_SOURCE
#include <bitsec.h>

#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die(const char *what) {
    fprintf(stderr, "abi_paths_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

static const char config_format[] =
    "{\"allow_inline_secrets\": true,"
    " \"tokens\": {\"keys\": [{\"kid\": \"hs\", \"alg\": \"HS256\", \"secret\": {\"value\": \"0123456789abcdef0123456789abcdef\"}}]},"
    " \"permissions\": {\"policy\": {\"resources\": [\"docs\"], \"actions\": [\"read\", \"write\"],"
    "   \"roles\": {\"reader\": {\"allow\": [\"docs:read\"]}, \"writer\": {\"inherits\": [\"reader\"], \"allow\": [\"docs:write\"]}}}},"
    " \"rate_limits\": {\"categories\": {\"default\": {\"capacity\": 1000000000, \"period_seconds\": 1}}},"
    " \"fields\": {\"keys\": [{\"id\": \"k1\", \"secret\": {\"value\": \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\", \"encoding\": \"hex\"}}]},"
    " \"audit\": {\"sinks\": [{\"type\": \"file\", \"path\": \"%s\"}]}%s}";

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: abi_paths_bench verify|permit|take|encrypt|emit N\n"); return 2; }
    const char *op = argv[1];
    long n = atol(argv[2]);
    char audit_path[64], config[2048];
    snprintf(audit_path, sizeof audit_path, "/tmp/abi_paths_bench_%ld.jsonl", (long)getpid());
    const char *hist = getenv("BITSEC_BENCH_HISTOGRAMS");
    char metrics[96] = "";
    if (hist && *hist) snprintf(metrics, sizeof metrics, ", \"metrics\": {\"histograms\": \"%s\"}", hist);
    int cn = snprintf(config, sizeof config, config_format, audit_path, metrics);
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(config, (size_t)cn, &rt) != BITSEC_OK) die("bitsec_runtime_open");
    static const char claims[] = "{\"sub\":\"u1\",\"roles\":[\"writer\"],\"exp\":4000000000}";
    char token[1024], out[4096];
    size_t tn = 0, on = 0;
    if (bitsec_token_sign(rt, claims, sizeof claims - 1, NULL, 0, token, sizeof token, &tn) != BITSEC_OK) die("sign");
    static const char principal[] = "u1\0writer\0\0";
    static const char event[] = "{\"type\":\"data_access\",\"subtype\":\"read\",\"actor\":\"u1\",\"result\":\"success\"}";
    static const unsigned char plain[32] = {1};
    struct timespec t0 = {0, 0}, t1, c0 = {0, 0}, c1;
    for (long i = -1000; i < n; i++) {
        if (i == 0) { clock_gettime(CLOCK_MONOTONIC, &t0); clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0); }
        int rc = BITSEC_OK;
        if (!strcmp(op, "verify")) {
            int32_t reason = -1;
            rc = bitsec_verify_token(rt, token, tn, 0, &reason, out, sizeof out, &on);
            if (reason != BITSEC_TOKEN_VALID) die("verify: not valid");
        } else if (!strcmp(op, "permit")) {
            uint64_t d = 0;
            rc = bitsec_check_permission(rt, principal, sizeof principal - 1, "docs:read", 9, NULL, 0, &d);
        } else if (!strcmp(op, "take")) {
            int64_t d[BITSEC_RATE_LIMIT_DECISION_LEN];
            rc = bitsec_rate_limit_take(rt, "default", 7, "client-1", 8, 1, 0, d);
        } else if (!strcmp(op, "encrypt")) {
            rc = bitsec_encrypt_field(rt, plain, sizeof plain, "t.c:1", 5, 0, out, sizeof out, &on);
        } else if (!strcmp(op, "emit")) {
            uint64_t seq = 0;
            rc = bitsec_audit_emit(rt, event, sizeof event - 1, &seq);
        } else {
            die("unknown op");
        }
        if (rc != BITSEC_OK) die(op);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    double cpu = (double)(c1.tv_sec - c0.tv_sec) * 1e9 + (double)(c1.tv_nsec - c0.tv_nsec);
    printf("%s %.1f ns/call (cpu), %.1f wall\n", op, n > 0 ? cpu / (double)n : 0.0, n > 0 ? ns / (double)n : 0.0);
    bitsec_runtime_close(rt);
    unlink(audit_path);
    return 0;
}
