/* bench/c/sessions_bench.c -- bitsec_session_validate from C: ns per validation of a live
 * session (bound to the client address, idle timer touched), in the process store and in the
 * host store (a shared-memory region), with and without the session's JSON written; and the
 * cost of bitsec_session_create. Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so
 * that other load on the machine does not count. Prints a markdown table.
 */
#define _GNU_SOURCE
#include <bitsec.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);  /* CPU time: the machine is shared */
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "sessions_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

static void run(const char *label, const char *config) {
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(config, strlen(config), &rt) != BITSEC_OK) die("open");
    char token[BITSEC_SESSION_TOKEN_LEN + 1], id[BITSEC_SESSION_ID_LEN + 1];
    const char *addr = "203.0.113.7", *ua = "Mozilla/5.0 (X11; Linux x86_64)";
    const int creates = 20000;
    double t0 = now_ns();
    for (int i = 0; i < creates; i++) {
        char user[32];
        int n = snprintf(user, sizeof user, "user-%d", i);
        if (bitsec_session_create(rt, user, (size_t)n, "t1", 2, addr, strlen(addr), ua, strlen(ua), 0, token, id) != BITSEC_OK) die("create");
    }
    double create_ns = (now_ns() - t0) / creates;
    const int iters = 1000000;
    int32_t reason = -1;
    size_t len = 0;
    t0 = now_ns();
    for (int i = 0; i < iters; i++) {
        if (bitsec_session_validate(rt, token, BITSEC_SESSION_TOKEN_LEN, addr, strlen(addr), ua, strlen(ua), 0, &reason, NULL, 0, &len) != BITSEC_OK || reason != 0) die("validate");
    }
    double decision_ns = (now_ns() - t0) / iters;
    char out[BITSEC_SESSION_INFO_MAX_BYTES];
    t0 = now_ns();
    for (int i = 0; i < iters; i++) {
        if (bitsec_session_validate(rt, token, BITSEC_SESSION_TOKEN_LEN, addr, strlen(addr), ua, strlen(ua), 0, &reason, out, sizeof out, &len) != BITSEC_OK || reason != 0) die("validate json");
    }
    double json_ns = (now_ns() - t0) / iters;
    printf("| %s | %.0f | %.0f | %.0f |\n", label, decision_ns, json_ns, create_ns);
    bitsec_runtime_close(rt);
}

int main(void) {
    printf("| store | validate, decision only (ns) | validate + session JSON (ns) | create (ns) |\n|---|---:|---:|---:|\n");
    run("process", "{\"sessions\": {\"store\": \"process\"}}");
    char config[512];
    snprintf(config, sizeof config,
             "{\"store\": {\"host\": {\"name\": \"sessbench-%d\", \"directory\": \"/tmp\", \"max_bytes\": 33554432}},"
             " \"sessions\": {\"store\": \"host\"}}", (int)getpid());
    run("host", config);
    char path[128];
    snprintf(path, sizeof path, "/tmp/bitsec-sessbench-%d.region", (int)getpid());
    unlink(path);
    return 0;
}
