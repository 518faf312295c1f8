/* bench/c/take_script.h -- the rate limiter's Redis take script, read from the Swift source
 * (Sources/BitsecCore/RateLimit/RedisScripts.swift), so that a benchmark's raw EVALSHA
 * baseline runs exactly the Lua bitsec runs (ratelimit_bench.c, cluster_bench.c). Run from
 * the repository root; `die` reports a failure and does not return. */
#ifndef BITSEC_BENCH_TAKE_SCRIPT_H
#define BITSEC_BENCH_TAKE_SCRIPT_H

#include <stdio.h>
#include <string.h>

static char *load_take_script(void (*die)(const char *)) {
    FILE *f = fopen("Sources/BitsecCore/RateLimit/RedisScripts.swift", "r");
    if (!f) die("open RedisScripts.swift (run from the repository root)");
    static char out[16384];
    char line[1024];
    size_t n = 0;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        if (!in) { if (strstr(line, "static let take = RedisScript(#\"\"\"")) in = 1; continue; }
        if (strncmp(line, "    \"\"\"#", 8) == 0) break;
        const char *s = strncmp(line, "    ", 4) == 0 ? line + 4 : line;
        size_t l = strlen(s);
        if (n + l >= sizeof out) die("script too long");
        memcpy(out + n, s, l);
        n += l;
    }
    fclose(f);
    if (n > 0 && out[n - 1] == '\n') n--;
    out[n] = 0;
    return out;
}

#endif
