/* bench/c/sessions_bench.c -- bitsec_session_validate from C: ns per validation of a live
 * session (bound to the client address, idle timer touched), in the process store, the host
 * store (a shared-memory region) and Redis, with and without the session's JSON written; and
 * the cost of bitsec_session_create. Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID),
 * so that other load on the machine does not count, and wall time (what a Redis round trip
 * costs the caller). Beside the Redis row, the floor of the same run: a raw hiredis GET of a
 * key as large as a session record, on its own connection. Prints a markdown table.
 *
 * RUNS UNDER tools/redis_fixture.py (bench/run.sh sees this line and runs it through the
 * fixture, which starts redis-server on a free port and exports BITSEC_TEST_REDIS_PORT).
 */
#define _GNU_SOURCE
#include <bitsec.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_clock.h"

static void die(const char *what) {
    fprintf(stderr, "sessions_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

/* Creates `creates` sessions, then validates the last one `iters` times without and with its
 * JSON; prints a row (µs, CPU and wall). */
static void run(const char *label, const char *config, int creates, int iters) {
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(config, strlen(config), &rt) != BITSEC_OK) die("open");
    char token[BITSEC_SESSION_TOKEN_LEN + 1], id[BITSEC_SESSION_ID_LEN + 1];
    const char *addr = "203.0.113.7", *ua = "Mozilla/5.0 (X11; Linux x86_64)";
    double t0 = bench_cpu_ns(), w0 = bench_wall_ns();
    for (int i = 0; i < creates; i++) {
        char user[32];
        int n = snprintf(user, sizeof user, "user-%d", i);
        if (bitsec_session_create(rt, user, (size_t)n, "t1", 2, addr, strlen(addr), ua, strlen(ua), 0, token, id) != BITSEC_OK) die("create");
    }
    double create_ns = (bench_cpu_ns() - t0) / creates, create_wall = (bench_wall_ns() - w0) / creates;
    int32_t reason = -1;
    size_t len = 0;
    t0 = bench_cpu_ns();
    w0 = bench_wall_ns();
    for (int i = 0; i < iters; i++) {
        if (bitsec_session_validate(rt, token, BITSEC_SESSION_TOKEN_LEN, addr, strlen(addr), ua, strlen(ua), 0, &reason, NULL, 0, &len) != BITSEC_OK || reason != 0) die("validate");
    }
    double decision_ns = (bench_cpu_ns() - t0) / iters, decision_wall = (bench_wall_ns() - w0) / iters;
    char out[BITSEC_SESSION_INFO_MAX_BYTES];
    t0 = bench_cpu_ns();
    w0 = bench_wall_ns();
    for (int i = 0; i < iters; i++) {
        if (bitsec_session_validate(rt, token, BITSEC_SESSION_TOKEN_LEN, addr, strlen(addr), ua, strlen(ua), 0, &reason, out, sizeof out, &len) != BITSEC_OK || reason != 0) die("validate json");
    }
    double json_ns = (bench_cpu_ns() - t0) / iters, json_wall = (bench_wall_ns() - w0) / iters;
    printf("| %s | %.2f (%.2f) | %.2f (%.2f) | %.2f (%.2f) |\n", label, decision_ns / 1e3, decision_wall / 1e3,
           json_ns / 1e3, json_wall / 1e3, create_ns / 1e3, create_wall / 1e3);
    bitsec_runtime_close(rt);
}

/* The floor of the Redis row: GET of a 400-byte value (about a session record) on a raw
 * hiredis connection; µs of wall time per round trip. */
static double raw_get_us(int port, int iters) {
    redisContext *c = redisConnect("127.0.0.1", port);
    if (!c || c->err) die("connect to redis");
    char value[401];
    memset(value, 'v', 400);
    value[400] = 0;
    redisReply *r = redisCommand(c, "SET sessbench:floor %s", value);
    if (!r || r->type == REDIS_REPLY_ERROR) die("SET");
    freeReplyObject(r);
    double w0 = bench_wall_ns();
    for (int i = 0; i < iters; i++) {
        r = redisCommand(c, "GET sessbench:floor");
        if (!r || r->type != REDIS_REPLY_STRING || r->len != 400) die("GET");
        freeReplyObject(r);
    }
    double us = (bench_wall_ns() - w0) / iters / 1e3;
    r = redisCommand(c, "DEL sessbench:floor");
    if (r) freeReplyObject(r);
    redisFree(c);
    return us;
}

int main(void) {
    const char *port_env = getenv("BITSEC_TEST_REDIS_PORT");
    if (!port_env || !*port_env) {
        fprintf(stderr, "sessions_bench: BITSEC_TEST_REDIS_PORT is not set: run under `python3 tools/redis_fixture.py run --` (bench/run.sh does)\n");
        return 1;
    }
    int port = atoi(port_env);
    printf("µs per call, CPU of the calling thread (wall in parentheses)\n\n");
    printf("| store | validate, decision only | validate + session JSON | create |\n|---|---:|---:|---:|\n");
    run("process", "{\"sessions\": {\"store\": \"process\"}}", 20000, 1000000);
    char config[512];
    snprintf(config, sizeof config,
             "{\"store\": {\"host\": {\"name\": \"sessbench-%d\", \"directory\": \"/tmp\", \"max_bytes\": 33554432}},"
             " \"sessions\": {\"store\": \"host\"}}", (int)getpid());
    run("host", config, 20000, 1000000);
    char path[128];
    snprintf(path, sizeof path, "/tmp/bitsec-sessbench-%d.region", (int)getpid());
    unlink(path);
    snprintf(config, sizeof config,
             "{\"redis\": {\"host\": \"127.0.0.1\", \"port\": %d, \"key_prefix\": \"sb%d:\"},"
             " \"sessions\": {\"store\": \"redis\"}}", port, (int)getpid());
    run("redis", config, 2000, 20000);
    printf("\nFloor of the redis row, same run: a raw hiredis GET of a 400-byte value, %.2f µs (wall) per round trip.\n",
           raw_get_us(port, 20000));
    return 0;
}
