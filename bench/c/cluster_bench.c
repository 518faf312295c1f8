/* bench/c/cluster_bench.c -- what Redis Cluster routing and TLS add to a rate-limit take, from C.
 *
 * RUNS UNDER tools/redis_fixture.py (bench/run.sh sees this line and runs it through
 * `python3 tools/redis_fixture.py run --`), for the fixture's servers: a six-node cluster
 * (BITSEC_TEST_REDIS_CLUSTER_NODES), a plain standalone server (BITSEC_TEST_REDIS_PORT), a
 * TLS-only server and its certificates (BITSEC_TEST_REDIS_TLS_PORT/_CA/_CERT/_KEY) and a
 * TLS-only three-primary cluster (BITSEC_TEST_REDIS_TLS_CLUSTER_NODES).
 *
 * Rows (µs per call: median and 10th percentile of 20,000 calls per row, the rows interleaved
 * call by call, one key):
 *   - bitsec_rate_limit_take through the cluster router vs a raw hiredis EVALSHA of the same
 *     take script (the same Lua, loaded with SCRIPT LOAD) sent straight to the node that owns
 *     the key, with the same key and the same arguments;
 *   - one redirect: the same EVALSHA sent to a node that does not own the slot (its MOVED
 *     reply), next to the direct round trip: a redirect costs both;
 *   - TLS: bitsec_rate_limit_take against the TLS-only server vs the plain server, and through
 *     the TLS cluster vs the plain cluster.
 * Prints a markdown table. The time from killing a primary to correct decisions is printed by
 * the fault tests (RedisClusterTests.killedPrimaryUnderLoadFollowsThePolicyAndRecovers, the
 * Python sentinel failover test), not here: it is a test of the cluster, not a loop.
 */
#define _GNU_SOURCE
#include <bitsec.h>
#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "take_script.h"

#define SAMPLES 20000

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "cluster_bench: %s (%s)\n", what, bitsec_last_error());
    exit(1);
}

static const char *env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "cluster_bench: %s is not set: run under `python3 tools/redis_fixture.py run --` (bench/run.sh does)\n", name);
        exit(1);
    }
    return v;
}

/* The take script (take_script.h). */
static char *load_script(void) { return load_take_script(die); }

/* "host:port" (up to a comma) -> a hiredis connection (plain). */
static redisContext *connect_node(const char *node) {
    char one[96], host[64];
    size_t l = strcspn(node, ",");
    if (l >= sizeof one) die("node address");
    memcpy(one, node, l);
    one[l] = 0;
    const char *colon = strrchr(one, ':');
    if (!colon || (size_t)(colon - one) >= sizeof host) die("node address");
    memcpy(host, one, (size_t)(colon - one));
    host[colon - one] = 0;
    redisContext *c = redisConnect(host, atoi(colon + 1));
    if (!c || c->err) die("connect to a cluster node");
    return c;
}

static const char *CATEGORY = "bench";
static const char *KEY = "bench-key";
/* The arguments bitsec sends for capacity 1e9 per 60 s, cost 1, server time (ARGV: full,
 * rate, need, now), and its key: <prefix>rl:{<category>:<key>}. */
static const char *FULL = "60000000000000", *RATE = "1000000000", *NEED = "60000", *NOW = "0";

static redisReply *evalsha(redisContext *c, const char *sha, const char *key) {
    const char *argv[] = {"EVALSHA", sha, "1", key, FULL, RATE, NEED, NOW};
    redisReply *r = redisCommandArgv(c, 8, argv, NULL);
    if (!r) die("EVALSHA: connection lost");
    return r;
}

static bitsec_runtime *open_rt(const char *redis_section) {
    char cfg[4096];
    int n = snprintf(cfg, sizeof cfg,
                     "{\"redis\": %s, \"rate_limits\": {\"categories\": {\"%s\": {\"capacity\": 1000000000, \"period_seconds\": 60}}}}",
                     redis_section, CATEGORY);
    if (n < 0 || (size_t)n >= sizeof cfg) die("config too long");
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(cfg, (size_t)n, &rt) != BITSEC_OK) die("open runtime");
    return rt;
}

/* JSON array of "host:port" strings from a comma-separated list. */
static void node_array(const char *list, char *out, size_t cap) {
    size_t o = 0;
    out[o++] = '[';
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (o + l + 5 >= cap) die("node list too long");
        if (o > 1) out[o++] = ',';
        out[o++] = '"';
        memcpy(out + o, p, l);
        o += l;
        out[o++] = '"';
        p += l;
        if (*p == ',') p++;
    }
    out[o++] = ']';
    out[o] = 0;
}

typedef struct {
    const char *name;
    bitsec_runtime *rt;   /* a bitsec take, or */
    redisContext *raw;    /* a raw EVALSHA on this connection */
    int expect_moved;     /* the raw reply must be MOVED */
    double samples[SAMPLES];
} row;

static const char *sha_g;
static const char *raw_key_g;

/* One call of a row, timed (µs). */
static double one_call(row *r) {
    int64_t d[BITSEC_RATE_LIMIT_DECISION_LEN];
    double t = now_ns();
    if (r->rt) {
        if (bitsec_rate_limit_take(r->rt, CATEGORY, strlen(CATEGORY), KEY, strlen(KEY), 1, 0, d) != BITSEC_OK) die("take");
        t = now_ns() - t;
        if (d[0] != 1 || d[5] != 0) die("a take was refused or degraded");
    } else {
        redisReply *x = evalsha(r->raw, sha_g, raw_key_g);
        t = now_ns() - t;
        int ok = r->expect_moved ? (x->type == REDIS_REPLY_ERROR && strncmp(x->str, "MOVED", 5) == 0)
                                 : (x->type == REDIS_REPLY_ARRAY && x->elements == 5);
        if (!ok) { fprintf(stderr, "reply: %s\n", x->type == REDIS_REPLY_ERROR ? x->str : "(not an error)"); die("raw EVALSHA reply"); }
        freeReplyObject(x);
    }
    return t / 1000;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of the row's samples (sorted in place). */
static double quantile(row *r, double q) {
    qsort(r->samples, SAMPLES, sizeof r->samples[0], cmp);
    return r->samples[(int)(q * (SAMPLES - 1))];
}

int main(void) {
    const char *nodes = env("BITSEC_TEST_REDIS_CLUSTER_NODES");
    const char *tls_nodes = env("BITSEC_TEST_REDIS_TLS_CLUSTER_NODES");
    const char *plain_port = env("BITSEC_TEST_REDIS_PORT");
    const char *tls_port = env("BITSEC_TEST_REDIS_TLS_PORT");
    const char *ca = env("BITSEC_TEST_REDIS_TLS_CA"), *cert = env("BITSEC_TEST_REDIS_TLS_CERT"), *key = env("BITSEC_TEST_REDIS_TLS_KEY");

    char list[1024], tls_list[1024], sec[4096], tls[2048];
    node_array(nodes, list, sizeof list);
    node_array(tls_nodes, tls_list, sizeof tls_list);
    snprintf(tls, sizeof tls, "{\"ca_file\": \"%s\", \"cert_file\": \"%s\", \"key_file\": \"%s\"}", ca, cert, key);

    snprintf(sec, sizeof sec, "{\"mode\": \"cluster\", \"nodes\": %s, \"command_timeout_ms\": 2000}", list);
    bitsec_runtime *cluster = open_rt(sec);
    snprintf(sec, sizeof sec, "{\"mode\": \"cluster\", \"nodes\": %s, \"command_timeout_ms\": 2000, \"tls\": %s}", tls_list, tls);
    bitsec_runtime *tls_cluster = open_rt(sec);
    snprintf(sec, sizeof sec, "{\"host\": \"127.0.0.1\", \"port\": %s, \"command_timeout_ms\": 2000}", plain_port);
    bitsec_runtime *plain = open_rt(sec);
    snprintf(sec, sizeof sec, "{\"host\": \"127.0.0.1\", \"port\": %s, \"command_timeout_ms\": 2000, \"tls\": %s}", tls_port, tls);
    bitsec_runtime *tls_plain = open_rt(sec);

    /* The raw side: the script loaded on every primary, the owner found by its MOVED. */
    const char *script = load_script();
    char raw_key[128];
    snprintf(raw_key, sizeof raw_key, "bitsec:rl:{%s:%s}", CATEGORY, KEY);
    raw_key_g = raw_key;
    redisContext *first = connect_node(nodes);
    redisReply *ld = redisCommand(first, "SCRIPT LOAD %s", script);
    if (!ld || ld->type != REDIS_REPLY_STRING) die("SCRIPT LOAD");
    static char sha[64];
    snprintf(sha, sizeof sha, "%s", ld->str);
    freeReplyObject(ld);
    sha_g = sha;
    redisReply *x = evalsha(first, sha, raw_key);
    redisContext *owner = first, *other = NULL;
    if (x->type == REDIS_REPLY_ERROR && strncmp(x->str, "MOVED", 5) == 0) {
        const char *addr = strrchr(x->str, ' ');
        if (!addr) die("MOVED reply");
        owner = connect_node(addr + 1);
        other = first;
    }
    freeReplyObject(x);
    if (!other) {
        /* The first node owns the key: any other node answers MOVED. */
        if (!strchr(nodes, ',')) die("a single-node cluster");
        for (const char *p = nodes; p && !other; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
            redisContext *c = connect_node(p);
            redisReply *y = evalsha(c, sha, raw_key);
            if (y->type == REDIS_REPLY_ERROR && strncmp(y->str, "MOVED", 5) == 0) other = c; else redisFree(c);
            freeReplyObject(y);
        }
        if (!other) die("no node answered MOVED");
    }
    ld = redisCommand(owner, "SCRIPT LOAD %s", script);
    if (!ld || ld->type != REDIS_REPLY_STRING || strcmp(ld->str, sha) != 0) die("SCRIPT LOAD on the owner");
    freeReplyObject(ld);

    /* The same take in standalone mode against the owning node: what routing adds. */
    snprintf(sec, sizeof sec, "{\"host\": \"%s\", \"port\": %d, \"command_timeout_ms\": 2000}", owner->tcp.host, owner->tcp.port);
    bitsec_runtime *on_owner = open_rt(sec);

    row rows[] = {
        {"bitsec_rate_limit_take through the cluster router", cluster, NULL, 0, {0}},
        {"raw hiredis EVALSHA of the same script on the owning node", NULL, owner, 0, {0}},
        {"raw EVALSHA on a node that does not own the slot (its MOVED reply)", NULL, other, 1, {0}},
        {"bitsec_rate_limit_take, standalone, plain TCP", plain, NULL, 0, {0}},
        {"bitsec_rate_limit_take, standalone, TLS (client certificate)", tls_plain, NULL, 0, {0}},
        {"bitsec_rate_limit_take, TLS cluster (3 primaries)", tls_cluster, NULL, 0, {0}},
        {"bitsec_rate_limit_take, standalone mode on the owning node", on_owner, NULL, 0, {0}},
    };
    const int nrows = (int)(sizeof rows / sizeof rows[0]);
    for (int i = 0; i < 500; i++) { /* warm up: connections, slot maps, script caches */
        for (int w = 0; w < nrows; w++) one_call(&rows[w]);
    }
    /* Interleaved call by call, the starting row rotating: a burst of load from other
     * processes, and whatever the previous call left behind, touch every row alike. */
    for (int i = 0; i < SAMPLES; i++) {
        for (int k = 0; k < nrows; k++) {
            int w = (k + i) % nrows;
            rows[w].samples[i] = one_call(&rows[w]);
        }
    }
    double med[7], p10[7];
    for (int w = 0; w < nrows; w++) { med[w] = quantile(&rows[w], 0.5); p10[w] = quantile(&rows[w], 0.1); }

    printf("## Redis Cluster and TLS (C)\n\n");
    printf("| operation | median µs | 10th percentile µs | note |\n|---|---:|---:|---|\n");
    printf("| %s | %.1f | %.1f | %.2fx the raw EVALSHA (goal <= 1.2x) |\n", rows[0].name, med[0], p10[0], med[0] / med[1]);
    printf("| %s | %.1f | %.1f | |\n", rows[1].name, med[1], p10[1]);
    printf("| %s | %.1f | %.1f | %.2fx the raw EVALSHA; the take through the router is %.2fx this |\n", rows[6].name, med[6], p10[6],
           med[6] / med[1], med[0] / med[6]);
    printf("| %s | %.1f | %.1f | one redirect costs this plus the direct call: %.1f µs, %.2fx |\n", rows[2].name, med[2], p10[2],
           med[2] + med[1], (med[2] + med[1]) / med[1]);
    printf("| %s | %.1f | %.1f | |\n", rows[3].name, med[3], p10[3]);
    printf("| %s | %.1f | %.1f | %.2fx plain |\n", rows[4].name, med[4], p10[4], med[4] / med[3]);
    printf("| %s | %.1f | %.1f | %.2fx the plain cluster |\n", rows[5].name, med[5], p10[5], med[5] / med[0]);
    double l1 = 0;
    FILE *la = fopen("/proc/loadavg", "r");
    if (la) { if (fscanf(la, "%lf", &l1) != 1) l1 = 0; fclose(la); }
    printf("\n%d calls per row, interleaved call by call after 500 warm-up calls; load average at the end %.2f.\n", SAMPLES, l1);

    bitsec_runtime_close(cluster);
    bitsec_runtime_close(tls_cluster);
    bitsec_runtime_close(plain);
    bitsec_runtime_close(tls_plain);
    bitsec_runtime_close(on_owner);
    if (owner != first) redisFree(owner);
    if (other != first) redisFree(other);
    redisFree(first);
    return 0;
}
