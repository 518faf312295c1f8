/* bench/c/synthetic_policy.h -- the synthetic RBAC policy of the permission benchmarks
 * (permissions_bench.c, micro_paths_bench.c): `roles` roles over 50 resources x 5 actions,
 * `rules` grants spread over them (every 7th owner-only), every 10th role inheriting the
 * previous one, one deny per 50 roles. The policy object is written between `prefix` and
 * `suffix` (a benchmark wraps it in its configuration). With `granted`, records per role one
 * plain grant it holds (granted[role]), so that a benchmark can ask only allowed questions.
 * `rnd` draws the grants (each benchmark seeds its own). The caller frees the result. */
#ifndef BITSEC_BENCH_SYNTHETIC_POLICY_H
#define BITSEC_BENCH_SYNTHETIC_POLICY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *synthetic_policy(int roles, int rules, unsigned long long (*rnd)(void), const char *prefix,
                              const char *suffix, char (*granted)[32]) {
    size_t cap = (size_t)rules * 64 + (size_t)roles * 96 + strlen(prefix) + strlen(suffix) + 4096, len = 0;
    char *s = malloc(cap);
    if (!s) exit(1);
    len += (size_t)sprintf(s + len, "%s{\"resources\": [", prefix);
    for (int r = 0; r < 50; r++) len += (size_t)sprintf(s + len, "%s\"res%d\"", r ? "," : "", r);
    len += (size_t)sprintf(s + len, "], \"actions\": [\"create\",\"read\",\"update\",\"delete\",\"execute\"], \"roles\": {");
    const char *acts[] = {"create", "read", "update", "delete", "execute"};
    int per = rules / roles, extra = rules % roles;
    for (int i = 0; i < roles; i++) {
        len += (size_t)sprintf(s + len, "%s\"role%d\": {\"allow\": [", i ? "," : "", i);
        int n = per + (i < extra ? 1 : 0);
        if (granted) granted[i][0] = 0;
        for (int k = 0; k < n; k++) {
            int res = (int)(rnd() % 50);
            const char *act = acts[rnd() % 5];
            if (k % 7 == 6) {
                len += (size_t)sprintf(s + len, "%s{\"permission\": \"res%d:%s\", \"owner_only\": true}", k ? "," : "", res, act);
            } else {
                len += (size_t)sprintf(s + len, "%s\"res%d:%s\"", k ? "," : "", res, act);
                if (granted && !granted[i][0] && !(res == 0 && !strcmp(act, "delete")))
                    snprintf(granted[i], 32, "res%d:%s", res, act);
            }
        }
        len += (size_t)sprintf(s + len, "]");
        if (i % 10 == 9) len += (size_t)sprintf(s + len, ", \"inherits\": [\"role%d\"]", i - 1);
        if (i % 50 == 49) len += (size_t)sprintf(s + len, ", \"deny\": [\"res0:delete\"]");
        len += (size_t)sprintf(s + len, "}");
        if (len + 512 > cap) { fprintf(stderr, "synthetic_policy: buffer\n"); exit(1); }
        if (granted && !granted[i][0]) { fprintf(stderr, "synthetic_policy: role%d has no plain grant\n", i); exit(1); }
    }
    sprintf(s + len, "}}%s", suffix);
    return s;
}

#endif
