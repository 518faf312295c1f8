/* ns per bitsec_check_permission decision from C, for policies of 50, 1,000 and 10,000
 * rules (and the ADR-007 policy), single thread; plus the batch form per decision.
 * Prints a markdown table. Build/run: BENCH=permissions make bench */
#define _POSIX_C_SOURCE 200809L
#include <bitsec.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "bench_clock.h"
#include "synthetic_policy.h"

static unsigned long long rng_state = 42;
static unsigned long long rnd(void) {
    unsigned long long z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The synthetic policy (synthetic_policy.h) in a configuration. */
static char *synthetic(int roles, int rules) {
    return synthetic_policy(roles, rules, rnd, "{\"permissions\": {\"policy\": ", "}}", NULL);
}

typedef struct { char principal[128]; size_t plen; char perm[64]; size_t permlen; } request;

static void run(const char *label, const char *config, int roles, int rules) {
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(config, strlen(config), &rt) != BITSEC_OK) {
        fprintf(stderr, "open %s: %s\n", label, bitsec_last_error());
        exit(1);
    }
    enum { NREQ = 1024 };
    static request reqs[NREQ];
    const char *acts[] = {"create", "read", "update", "delete", "execute"};
    const char *adr_roles[] = {"operator", "quality_engineer", "manager", "admin"};
    const char *adr_res[] = {"inspections", "defects", "reports", "artifacts", "users", "system"};
    for (int i = 0; i < NREQ; i++) {
        request *q = &reqs[i];
        if (roles == 0) {
            q->plen = (size_t)snprintf(q->principal, sizeof q->principal, "user-%d%c%s%cacme%cquality", i, 0, adr_roles[rnd() % 4], 0, 0);
            q->permlen = (size_t)snprintf(q->perm, sizeof q->perm, "%s:%s", adr_res[rnd() % 6], acts[rnd() % 5]);
        } else {
            q->plen = (size_t)snprintf(q->principal, sizeof q->principal, "user-%d%crole%d%cacme%cquality", i, 0, (int)(rnd() % (unsigned)roles), 0, 0);
            q->permlen = (size_t)snprintf(q->perm, sizeof q->perm, "res%d:%s", (int)(rnd() % 50), acts[rnd() % 5]);
        }
    }
    uint64_t d = 0, allowed = 0;
    long iters = 2000000;
    for (int i = 0; i < 100000; i++) {  /* warm up */
        request *q = &reqs[i & (NREQ - 1)];
        if (bitsec_check_permission(rt, q->principal, q->plen, q->perm, q->permlen, NULL, 0, &d) != BITSEC_OK) { fprintf(stderr, "%s\n", bitsec_last_error()); exit(1); }
    }
    double w0 = bench_wall_ns();
    double t0 = bench_cpu_ns();
    for (long i = 0; i < iters; i++) {
        request *q = &reqs[i & (NREQ - 1)];
        if (bitsec_check_permission(rt, q->principal, q->plen, q->perm, q->permlen, NULL, 0, &d) != BITSEC_OK) exit(1);
        allowed += d & 1;
    }
    double single = (bench_cpu_ns() - t0) / (double)iters;
    double single_wall = (bench_wall_ns() - w0) / (double)iters;

    /* An undeclared resource is refused after the ABI entry (handle check, two
     * atomics), argument parsing and the policy fetch, before any role is looked at. */
    t0 = bench_cpu_ns();
    for (long i = 0; i < iters; i++) {
        request *q = &reqs[i & (NREQ - 1)];
        if (bitsec_check_permission(rt, q->principal, q->plen, "zz:read", 7, NULL, 0, &d) != BITSEC_OK) exit(1);
        allowed += d & 1;
    }
    double floor_ns = (bench_cpu_ns() - t0) / (double)iters;

    /* With a context (owner, tenant, department): conditions and tenant isolation run. */
    const char ctx[] = "user-1\0acme\0quality";
    t0 = bench_cpu_ns();
    for (long i = 0; i < iters; i++) {
        request *q = &reqs[i & (NREQ - 1)];
        if (bitsec_check_permission(rt, q->principal, q->plen, q->perm, q->permlen, ctx, sizeof ctx - 1, &d) != BITSEC_OK) exit(1);
        allowed += d & 1;
    }
    double withctx = (bench_cpu_ns() - t0) / (double)iters;

    /* Batch: 32 permissions per call. */
    char list[32 * 24];
    size_t ll = 0;
    for (int k = 0; k < 32; k++) ll += (size_t)sprintf(list + ll, "%s%s", k ? " " : "", reqs[k].perm);
    uint64_t out[32];
    size_t count = 0;
    long biters = iters / 32;
    t0 = bench_cpu_ns();
    for (long i = 0; i < biters; i++) {
        request *q = &reqs[i & (NREQ - 1)];
        if (bitsec_check_permissions(rt, q->principal, q->plen, list, ll, NULL, 0, out, 32, &count) != BITSEC_OK) exit(1);
        allowed += out[0] & 1;
    }
    double batch = (bench_cpu_ns() - t0) / (double)(biters * 32);

    char stats[1024];
    size_t sl = 0;
    if (bitsec_permission_stats(rt, stats, sizeof stats, &sl) != BITSEC_OK) exit(1);
    char *cells = strstr(stats, "\"cells\":");
    int ncells = cells ? atoi(cells + 8) : -1;
    char nroles[16];
    snprintf(nroles, sizeof nroles, "%d", roles ? roles : 4);
    printf("| %s | %d | %s | %d | %.0f | %.0f | %.0f | %.0f | %.1f |\n", label, rules, nroles, ncells, single, single_wall, withctx, floor_ns, batch);
    if (allowed == 0) printf("(no decision was allowed?)\n");
    bitsec_runtime_close(rt);
}

int main(int argc, char **argv) {
    const char *adr = argc > 1 ? argv[1] : "examples/policies/adr007.json";
    printf("## permissions: C, ns per decision (bitsec_check_permission, one thread)\n\n");
    printf("ns of thread CPU time per decision (wall clock for the first case too); 1,024 distinct\n");
    printf("principals and permissions in rotation; no context unless stated.\n\n");
    printf("| policy | rules | roles | distinct cells | check | check, wall | check with context | unknown resource | batch of 32, per decision |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    char adrcfg[512];
    snprintf(adrcfg, sizeof adrcfg, "{\"permissions\": {\"policy_file\": \"%s\"}}", adr);
    run("ADR-007", adrcfg, 0, 19);
    int sizes[][2] = {{10, 50}, {100, 1000}, {1000, 10000}};
    for (int i = 0; i < 3; i++) {
        char *cfg = synthetic(sizes[i][0], sizes[i][1]);
        char label[64];
        snprintf(label, sizeof label, "synthetic");
        run(label, cfg, sizes[i][0], sizes[i][1]);
        free(cfg);
    }
    return 0;
}
