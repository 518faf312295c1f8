/* Passwords at the C level: bitsec_password_hash / _verify (and the dummy verification) at the
 * default parameters (scrypt N = 2^17, r = 8, p = 1: 128 MiB) vs OpenSSL's raw EVP_KDF
 * "SCRYPT" with the same parameters, and the policy check. Peak memory from getrusage.
 * Run: BENCH=passwords make bench */
#define _POSIX_C_SOURCE 199309L
#include <bitsec.h>
#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double cpu_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#ifndef BENCH_N
#define BENCH_N 5
#endif

static int raw_scrypt(const char *pw, const unsigned char *salt, unsigned char *out) {
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    uint64_t n = 1u << 17, maxmem = 256u << 20;
    uint32_t r = 8, p = 1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string("pass", (void *)pw, strlen(pw)),
        OSSL_PARAM_construct_octet_string("salt", (void *)salt, 16),
        OSSL_PARAM_construct_uint64("n", &n), OSSL_PARAM_construct_uint32("r", &r),
        OSSL_PARAM_construct_uint32("p", &p), OSSL_PARAM_construct_uint64("maxmem_bytes", &maxmem),
        OSSL_PARAM_construct_end()};
    int ok = EVP_KDF_derive(ctx, out, 32, params) == 1;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return ok;
}

int main(void) {
    const char *cfg = "{\"passwords\": {}}";
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(cfg, strlen(cfg), &rt) != BITSEC_OK) return 1;
    const char *pw = "correct horse battery staple";
    char stored[BITSEC_PASSWORD_MAX_HASH_BYTES];
    size_t n = 0;
    int32_t reason, rehash;
    double t, c, hash_ms, hash_cpu, verify_ms, dummy_ms, raw_ms, raw_cpu, check_us;
    t = now_ms(), c = cpu_ms();
    for (int i = 0; i < BENCH_N; i++)
        if (bitsec_password_hash(rt, pw, strlen(pw), stored, sizeof stored, &n) != BITSEC_OK) return 1;
    hash_ms = (now_ms() - t) / BENCH_N, hash_cpu = (cpu_ms() - c) / BENCH_N;
    t = now_ms();
    for (int i = 0; i < BENCH_N; i++)
        if (bitsec_password_verify(rt, "a wrong guess", 13, stored, n, &reason, &rehash) != BITSEC_OK) return 1;
    verify_ms = (now_ms() - t) / BENCH_N;
    t = now_ms();
    for (int i = 0; i < BENCH_N; i++)
        if (bitsec_password_verify(rt, "a wrong guess", 13, NULL, 0, &reason, &rehash) != BITSEC_OK) return 1;
    dummy_ms = (now_ms() - t) / BENCH_N;
    unsigned char salt[16] = {1, 2, 3}, out[32];
    t = now_ms(), c = cpu_ms();
    for (int i = 0; i < BENCH_N; i++)
        if (!raw_scrypt(pw, salt, out)) return 1;
    raw_ms = (now_ms() - t) / BENCH_N, raw_cpu = (cpu_ms() - c) / BENCH_N;
    uint32_t reasons;
    size_t len;
    t = now_ms();
    for (int i = 0; i < 100000; i++)
        if (bitsec_password_check(rt, pw, strlen(pw), 0, &reasons, &len) != BITSEC_OK) return 1;
    check_us = (now_ms() - t) * 1e3 / 100000;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("## passwords (C): scrypt N=2^17, r=8, p=1, 16-byte salt, 32-byte hash; mean of %d\n\n", BENCH_N);
    printf("| operation | time |\n|---|---|\n");
    printf("| bitsec_password_hash | %.1f ms (CPU time %.1f ms) |\n", hash_ms, hash_cpu);
    printf("| bitsec_password_verify (wrong password) | %.1f ms |\n", verify_ms);
    printf("| bitsec_password_verify (stored NULL: dummy) | %.1f ms |\n", dummy_ms);
    printf("| OpenSSL EVP_KDF SCRYPT, same parameters | %.1f ms (CPU time %.1f ms) |\n", raw_ms, raw_cpu);
    printf("| bitsec_password_check (28 characters, blocklist lookup) | %.2f us |\n", check_us);
    printf("\npeak resident memory of the process: %ld MiB (scrypt needs 128 * r * N = 128 MiB)\n", ru.ru_maxrss / 1024);
    bitsec_runtime_close(rt);
    return 0;
}
