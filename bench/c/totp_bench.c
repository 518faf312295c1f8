/* TOTP at the C level: bitsec's stateless check and stateful verify vs OpenSSL's raw
 * HMAC-SHA1 (the primitive: window 1 costs up to three of them).
 * Run: BENCH=totp make bench */
#define _POSIX_C_SOURCE 199309L
#include <bitsec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

#ifndef BENCH_N
#define BENCH_N 200000
#endif

int main(void) {
    char secret[128], code[16], wrong[16];
    size_t n = 0;
    if (bitsec_totp_secret_generate(0, secret, sizeof secret, &n) != BITSEC_OK) return 1;
    time_t at = time(NULL);
    if (bitsec_totp_code(secret, n, BITSEC_OTP_SHA1, 6, 30, 0, (int64_t)at, code, sizeof code, &n) != BITSEC_OK) return 1;
    /* A code wrong for the whole window. */
    for (int i = 0;; i++) {
        char c[3][16];
        snprintf(wrong, sizeof wrong, "%06d", i);
        int clash = 0;
        for (int k = -1; k <= 1; k++) {
            size_t m;
            if (bitsec_totp_code(secret, strlen(secret), 0, 6, 30, 0, (int64_t)at + 30 * k, c[k + 1], 16, &m) != BITSEC_OK) return 1;
            if (strcmp(c[k + 1], wrong) == 0) clash = 1;
        }
        if (!clash) break;
    }
    const char *cfg = "{\"totp\": {\"window\": 1, \"throttle\": {\"max_failures\": 1000}}}";
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(cfg, strlen(cfg), &rt) != BITSEC_OK) return 1;
    size_t sl = strlen(secret);
    int32_t reason;
    int64_t step, retry;
    double t, check_right, check_wrong, verify_right, verify_wrong, hmac1;
    char user[32];

    t = now_us();
    for (int i = 0; i < BENCH_N; i++)
        if (bitsec_totp_check(secret, sl, code, 6, 0, 6, 30, 0, 1, (int64_t)at, &reason, &step) || reason) return 2;
    check_right = (now_us() - t) / BENCH_N;
    t = now_us();
    for (int i = 0; i < BENCH_N; i++)
        if (bitsec_totp_check(secret, sl, wrong, 6, 0, 6, 30, 0, 1, (int64_t)at, &reason, &step) || reason != BITSEC_TOTP_WRONG_CODE) return 3;
    check_wrong = (now_us() - t) / BENCH_N;
    t = now_us();
    for (int i = 0; i < BENCH_N; i++) {
        int ul = snprintf(user, sizeof user, "u%d", i);
        if (bitsec_totp_verify(rt, secret, sl, code, 6, user, (size_t)ul, (int64_t)at, &reason, &step, &retry) || reason) return 4;
    }
    verify_right = (now_us() - t) / BENCH_N;
    t = now_us();
    for (int i = 0; i < BENCH_N; i++) {
        /* 60 000 users, each failing a few times: the throttle's in-process table holds at
         * most 100 000 users with failures in the window (beyond, a new user's failure is
         * answered THROTTLED, the safe side), so 200 000 fresh users would measure that. */
        int ul = snprintf(user, sizeof user, "w%d", i % 60000);
        if (bitsec_totp_verify(rt, secret, sl, wrong, 6, user, (size_t)ul, (int64_t)at, &reason, &step, &retry) || reason != BITSEC_TOTP_WRONG_CODE) return 5;
    }
    verify_wrong = (now_us() - t) / BENCH_N;
    /* The primitive: one HMAC-SHA1 of an 8-byte counter with a 20-byte key (HMAC() one-shot). */
    unsigned char key[20] = {1, 2, 3}, msg[8] = {0}, mac[64];
    unsigned int ml;
    t = now_us();
    for (int i = 0; i < BENCH_N; i++) {
        msg[7] = (unsigned char)i;
        if (!HMAC(EVP_sha1(), key, 20, msg, 8, mac, &ml)) return 6;
    }
    hmac1 = (now_us() - t) / BENCH_N;
    bitsec_runtime_close(rt);

    printf("## totp (C): bitsec vs OpenSSL HMAC-SHA1, window 1, SHA-1, 6 digits\n\n");
    printf("| operation | µs/op | x one HMAC() |\n|---|---:|---:|\n");
    printf("| OpenSSL HMAC() one-shot, 1 HMAC-SHA1 | %.3f | 1.0 |\n", hmac1);
    printf("| bitsec_totp_check, right code (1 HMAC) | %.3f | %.1f |\n", check_right, check_right / hmac1);
    printf("| bitsec_totp_check, wrong code (3 HMACs) | %.3f | %.1f |\n", check_wrong, check_wrong / hmac1);
    printf("| bitsec_totp_verify, right code, fresh user (replay CAS) | %.3f | %.1f |\n", verify_right, verify_right / hmac1);
    printf("| bitsec_totp_verify, wrong code, 60 000 users (throttle count) | %.3f | %.1f |\n", verify_wrong, verify_wrong / hmac1);
    return 0;
}
