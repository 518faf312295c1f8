/* bench/c/ratelimit_bench.c -- the runtime's own cost of bitsec_rate_limit_take from C.
 *
 * In process: ns per take (one thread, and 2 threads on different keys).
 * Through Redis: us per take beside a raw EVALSHA of the same Lua script and a raw PING, both
 * over a plain blocking socket (no client library: the floor any client pays), and
 * bitsec_redis_ping (the pool's PING). The redis-server is started here on a free loopback
 * port and stopped by PID. Prints a markdown table.
 */
#define _GNU_SOURCE
#include <bitsec.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "take_script.h"

extern char **environ;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "ratelimit_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) die("free port");
    close(fd);
    return ntohs(a.sin_port);
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Sends a RESP command, reads one reply of `lines` CRLF-terminated lines (an array of
 * integers is 1 + n lines). Returns the bytes read into buf. */
static size_t roundtrip(int fd, const char *cmd, size_t cmd_len, char *buf, size_t cap, int lines) {
    size_t off = 0;
    while (off < cmd_len) {
        ssize_t n = write(fd, cmd + off, cmd_len - off);
        if (n <= 0) die("write");
        off += (size_t)n;
    }
    size_t got = 0;
    int seen = 0;
    while (seen < lines) {
        ssize_t n = read(fd, buf + got, cap - got - 1);
        if (n <= 0) die("read");
        for (ssize_t i = 0; i < n; i++) if (buf[got + (size_t)i] == '\n') seen++;
        got += (size_t)n;
    }
    buf[got] = 0;
    return got;
}

/* The take script (take_script.h). */
static char *load_script(void) { return load_take_script(die); }

typedef struct { bitsec_runtime *rt; const char *key; long iters; double ns; } job;

static void *take_loop(void *p) {
    job *j = p;
    int64_t d[BITSEC_RATE_LIMIT_DECISION_LEN];
    size_t kl = strlen(j->key);
    double t = now_ns();
    for (long i = 0; i < j->iters; i++) {
        if (bitsec_rate_limit_take(j->rt, "bench", 5, j->key, kl, 1, 0, d) != BITSEC_OK) die("take");
    }
    j->ns = (now_ns() - t) / (double)j->iters;
    return NULL;
}

static double best_take_ns(bitsec_runtime *rt, const char *key, long iters, int reps) {
    double best = 1e18;
    for (int r = 0; r < reps; r++) {
        job j = {rt, key, iters, 0};
        take_loop(&j);
        if (j.ns < best) best = j.ns;
    }
    return best;
}

int main(void) {
    int port = free_port();
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    char *args[] = {"redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--daemonize", "no", "--loglevel", "warning", NULL};
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, "redis-server", &fa, NULL, args, environ) != 0) die("spawn redis-server");
    posix_spawn_file_actions_destroy(&fa);
    int fd = -1;
    for (int i = 0; i < 250 && fd < 0; i++) { usleep(20000); fd = dial(port); }
    if (fd < 0) { kill(pid, SIGKILL); die("redis-server did not start"); }
    char buf[4096];

    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"rate_limits\": {\"store\": \"local\", \"categories\": {\"bench\": {\"capacity\": 1000000000, \"period_seconds\": 60}}}}");
    bitsec_runtime *local = NULL, *redis = NULL;
    if (bitsec_runtime_open(cfg, strlen(cfg), &local) != BITSEC_OK) die("open local");
    snprintf(cfg, sizeof cfg,
             "{\"redis\": {\"port\": %d, \"command_timeout_ms\": 2000}, \"rate_limits\": {\"categories\": "
             "{\"bench\": {\"capacity\": 1000000000, \"period_seconds\": 60}}}}", port);
    if (bitsec_runtime_open(cfg, strlen(cfg), &redis) != BITSEC_OK) die("open redis");

    /* In process. */
    best_take_ns(local, "warmup", 200000, 1);
    double ns1 = best_take_ns(local, "user-12345", 500000, 15);
    job jobs[2] = {{local, "thread-a", 2000000, 0}, {local, "thread-b", 2000000, 0}};
    pthread_t th[2];
    double t2 = now_ns();
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, take_loop, &jobs[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    double mops2 = 4000000.0 / ((now_ns() - t2) / 1e9) / 1e6;

    /* Redis: raw EVALSHA of the same script, raw PING, bitsec's take and PING. */
    const char *script = load_script();
    size_t sl = strlen(script);
    char *load = malloc(sl + 128);
    int ll = sprintf(load, "*3\r\n$6\r\nSCRIPT\r\n$4\r\nLOAD\r\n$%zu\r\n", sl);
    memcpy(load + ll, script, sl);
    memcpy(load + ll + sl, "\r\n", 2);
    roundtrip(fd, load, (size_t)ll + sl + 2, buf, sizeof buf, 2);
    char sha[41] = {0};
    char *nl = strchr(buf, '\n');
    if (buf[0] != '$' || !nl) die("SCRIPT LOAD");
    memcpy(sha, nl + 1, 40);
    /* KEYS[1] = bitsec:rl:{bench:raw}; ARGV: full, rate, need, now=0 (same as bitsec sends). */
    char eval[512];
    const char *k = "bitsec:rl:{bench:raw}";
    const char *full = "60000000000000", *rate = "1000000000", *need = "60000";
    int el = snprintf(eval, sizeof eval, "*8\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$%zu\r\n%s\r\n$1\r\n0\r\n",
                      sha, strlen(k), k, strlen(full), full, strlen(rate), rate, strlen(need), need);
    const long n = 3000;
    int64_t d[BITSEC_RATE_LIMIT_DECISION_LEN];
    for (int i = 0; i < 2000; i++) {
        roundtrip(fd, eval, (size_t)el, buf, sizeof buf, 6);
        if (bitsec_rate_limit_take(redis, "bench", 5, "user-12345", 10, 1, 0, d) != BITSEC_OK || d[5] != 0) die("redis take");
    }
    if (buf[0] != '*') { fprintf(stderr, "%s\n", buf); die("EVALSHA reply"); }
    double raw_eval = 1e18, raw_ping = 1e18, bt = 1e18, bp = 1e18;
    for (int rep = 0; rep < 9; rep++) { /* interleaved rounds: all four see the same load */
        double t = now_ns();
        for (long i = 0; i < n; i++) roundtrip(fd, eval, (size_t)el, buf, sizeof buf, 6);
        double v = (now_ns() - t) / n / 1000;
        if (v < raw_eval) raw_eval = v;
        t = now_ns();
        for (long i = 0; i < n; i++) roundtrip(fd, "*1\r\n$4\r\nPING\r\n", 14, buf, sizeof buf, 1);
        v = (now_ns() - t) / n / 1000;
        if (v < raw_ping) raw_ping = v;
        t = now_ns();
        for (long i = 0; i < n; i++) {
            if (bitsec_rate_limit_take(redis, "bench", 5, "user-12345", 10, 1, 0, d) != BITSEC_OK) die("redis take");
        }
        v = (now_ns() - t) / n / 1000;
        if (v < bt) bt = v;
        t = now_ns();
        for (long i = 0; i < n; i++) {
            if (bitsec_redis_ping(redis, NULL) != BITSEC_OK) die("ping");
        }
        v = (now_ns() - t) / n / 1000;
        if (v < bp) bp = v;
    }
    if (d[5] != 0) die("a bench take was degraded");

    printf("## rate_limits (C)\n\n");
    printf("| operation | time | note |\n|---|---:|---|\n");
    printf("| bitsec_rate_limit_take, in process, 1 thread | %.0f ns | goal <= 100 ns |\n", ns1);
    printf("| bitsec_rate_limit_take, in process, 2 threads (2 keys) | %.1f M takes/s total | 2 cores |\n", mops2);
    printf("| raw PING round trip (plain socket) | %.1f us | the network floor |\n", raw_ping);
    printf("| bitsec_redis_ping (pool, hiredis) | %.1f us | |\n", bp);
    printf("| raw EVALSHA of the same take script (plain socket) | %.1f us | |\n", raw_eval);
    printf("| bitsec_rate_limit_take through Redis | %.1f us | %.2fx the raw EVALSHA (goal <= 1.2x) |\n", bt, bt / raw_eval);

    bitsec_runtime_close(local);
    bitsec_runtime_close(redis);
    free(load);
    close(fd);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return 0;
}
