/* Audit from C: bitsec_audit_emit latency and sustained events/s per durability mode, with
 * 1 and 8 emitting threads, against the raw cost of write(2) (+ fdatasync) of the same line.
 * Prints a markdown table. */
#define _GNU_SOURCE
#include <bitsec.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char EVENT[] =
    "{\"type\":\"authentication\",\"subtype\":\"failed_login\",\"result\":\"failure\",\"user_id\":\"user-4711\","
    "\"ip_address\":\"203.0.113.7\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64)\",\"reason\":\"invalid_password\","
    "\"details\":{\"attempt\":3,\"method\":\"password\"}}";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char dir[256];
/* CPU µs per event of the last 1-thread run: the emitting thread, and the whole process. */
static double caller_cpu_us, total_cpu_us;

static bitsec_runtime *open_rt(const char *name, const char *durability) {
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"audit\": {\"sinks\": [{\"type\": \"file\", \"path\": \"%s/%s\"}], \"durability\": \"%s\","
             " \"queue_capacity\": 1048576, \"full_policy\": \"block\", \"block_timeout_ms\": 10000}}",
             dir, name, durability);
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(cfg, strlen(cfg), &rt) != BITSEC_OK) {
        fprintf(stderr, "open: %s\n", bitsec_last_error());
        exit(1);
    }
    return rt;
}

struct job { bitsec_runtime *rt; int n; pthread_barrier_t *b; double cpu; };

static void *worker(void *p) {
    struct job *j = p;
    pthread_barrier_wait(j->b);
    double c0 = cpu(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < j->n; i++) {
        uint64_t seq;
        if (bitsec_audit_emit(j->rt, EVENT, sizeof EVENT - 1, &seq) != BITSEC_OK) {
            fprintf(stderr, "emit: %s\n", bitsec_last_error());
            exit(1);
        }
    }
    j->cpu = cpu(CLOCK_THREAD_CPUTIME_ID) - c0;
    return NULL;
}

/* Returns events/s including the final flush; *emit_us receives the mean emit latency (1 thread). */
static double run(const char *name, const char *durability, int threads, int per, double *emit_us) {
    bitsec_runtime *rt = open_rt(name, durability);
    uint64_t seq;
    if (bitsec_audit_emit(rt, EVENT, sizeof EVENT - 1, &seq) != BITSEC_OK || bitsec_audit_flush(rt) != BITSEC_OK) exit(1);
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, (unsigned)threads + 1);
    pthread_t t[64];
    struct job j = {rt, per, &b, 0};
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, &j);
    pthread_barrier_wait(&b);
    double p0 = cpu(CLOCK_PROCESS_CPUTIME_ID);
    double t0 = now();
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double t1 = now();
    if (bitsec_audit_flush(rt) != BITSEC_OK) { fprintf(stderr, "flush: %s\n", bitsec_last_error()); exit(1); }
    double t2 = now();
    if (emit_us) *emit_us = (t1 - t0) / per * 1e6;
    if (threads == 1) {
        caller_cpu_us = j.cpu / per * 1e6;
        total_cpu_us = (cpu(CLOCK_PROCESS_CPUTIME_ID) - p0) / per * 1e6;
    }
    bitsec_runtime_close(rt);
    return (double)threads * per / (t2 - t0);
}

static double raw(const char *name, int n, int sync) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    char line[512];
    int len = snprintf(line, sizeof line, "%s\n", EVENT);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        if (write(fd, line, (size_t)len) != len) exit(1);
        if (sync) fdatasync(fd);
    }
    double dt = now() - t0;
    close(fd);
    return dt / n * 1e6;
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/bitsec-audit-cbench-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    int n = getenv("AUDIT_BENCH_N") ? atoi(getenv("AUDIT_BENCH_N")) : 500000;
    int nf = getenv("AUDIT_BENCH_N_FSYNC") ? atoi(getenv("AUDIT_BENCH_N_FSYNC")) : 2000;
    double w = raw("raw.log", n, 0), ws = raw("rawsync.log", nf, 1);
    double e_none, e_batch, e_every, e8;
    double s_none = run("none.log", "none", 1, n, &e_none);
    double cc_none = caller_cpu_us, tc_none = total_cpu_us;
    double s_batch = run("batched.log", "batched", 1, n, &e_batch);
    double cc_batch = caller_cpu_us, tc_batch = total_cpu_us;
    double s_batch8 = run("batched8.log", "batched", 8, n / 8, &e8);
    double s_every = run("every.log", "every_event", 1, nf, &e_every);
    double s_every8 = run("every8.log", "every_event", 8, nf, NULL);
    printf("## audit from C (%d events; every_event rows %d per thread)\n\n", n, nf);
    printf("| operation | wall µs/event (emit) | caller CPU µs/event | total CPU µs/event | sustained events/s |\n|---|---:|---:|---:|---:|\n");
    printf("| write(2) of the line (no bitsec) | %.2f | | | %.0f |\n", w, 1e6 / w);
    printf("| write(2) + fdatasync per line (no bitsec) | %.2f | | | %.0f |\n", ws, 1e6 / ws);
    printf("| bitsec_audit_emit, durability none, 1 thread | %.2f | %.2f | %.2f | %.0f |\n", e_none, cc_none, tc_none, s_none);
    printf("| bitsec_audit_emit, batched, 1 thread | %.2f | %.2f | %.2f | %.0f |\n", e_batch, cc_batch, tc_batch, s_batch);
    printf("| bitsec_audit_emit, batched, 8 threads | %.2f | | | %.0f |\n", e8, s_batch8);
    printf("| bitsec_audit_emit, every_event, 1 thread | %.2f | | | %.0f |\n", e_every, s_every);
    printf("| bitsec_audit_emit, every_event, 8 threads | - | | | %.0f |\n", s_every8);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
