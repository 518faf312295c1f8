/* A C program using bitsec through its installed header and pkg-config:
 *
 *   cc example.c $(pkg-config --cflags --libs bitsec) -o example
 *   ./example config.json
 *
 * Opens a runtime from a configuration file, prints what is configured, and pings Redis
 * when a redis section is present. */
#include <bitsec.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG.json\n", argv[0]);
        return 2;
    }
    printf("bitsec %s (ABI %d)\n", bitsec_version_string(), bitsec_abi_version());

    bitsec_runtime *rt = NULL;
    int rc = bitsec_runtime_open_file(argv[1], &rt);
    if (rc != BITSEC_OK) {
        fprintf(stderr, "cannot open runtime: %s: %s\n", bitsec_strerror(rc), bitsec_last_error());
        return 1;
    }

    char *json = NULL;
    size_t len = 0;
    rc = bitsec_runtime_describe_alloc(rt, &json, &len);
    if (rc == BITSEC_OK) {
        printf("configured: %s\n", json);
        bitsec_free(json);
    }

    int64_t rtt = 0;
    rc = bitsec_redis_ping(rt, &rtt);
    if (rc == BITSEC_OK) {
        printf("redis: PONG in %lld us\n", (long long)rtt);
    } else if (rc == BITSEC_E_NOT_CONFIGURED) {
        printf("redis: not configured (embedded default)\n");
    } else {
        printf("redis: %s: %s\n", bitsec_strerror(rc), bitsec_last_error());
    }

    bitsec_runtime_close(rt);
    return 0;
}
