/* fields_bench: bitsec_encrypt_field / bitsec_decrypt_field from C against the raw OpenSSL
 * AES-256-GCM AEAD (EVP, a fresh EVP_CIPHER_CTX per message: what a C caller writes by hand;
 * and a reused, pre-keyed context: the floor). Prints a markdown table (ns/op and ratios). */
#define _POSIX_C_SOURCE 199309L
#include <bitsec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static unsigned char key[32], nonce[12], out[4096], tag[16], pt[1024];
static const char ctx[] = "equipment_records.serial_number|42|tenant-7";
static volatile int sink;

/* The raw AEAD as a C caller writes it: new context, key, nonce, AAD, data, tag. */
static void raw_seal(const EVP_CIPHER *c, size_t n) {
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int l = 0;
    RAND_bytes(nonce, 12);
    EVP_EncryptInit_ex2(x, c, key, nonce, NULL);
    EVP_EncryptUpdate(x, NULL, &l, (const unsigned char *)ctx, (int)strlen(ctx));
    EVP_EncryptUpdate(x, out, &l, pt, (int)n);
    EVP_EncryptFinal_ex(x, out + l, &l);
    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, tag);
    EVP_CIPHER_CTX_free(x);
}

static void raw_open(const EVP_CIPHER *c, size_t n, const unsigned char *ct, const unsigned char *t) {
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int l = 0;
    EVP_DecryptInit_ex2(x, c, key, nonce, NULL);
    EVP_DecryptUpdate(x, NULL, &l, (const unsigned char *)ctx, (int)strlen(ctx));
    EVP_DecryptUpdate(x, out, &l, ct, (int)n);
    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, 16, (void *)t);
    sink = EVP_DecryptFinal_ex(x, out + l, &l);
    EVP_CIPHER_CTX_free(x);
}

/* The floor: one pre-keyed context, only the nonce reset per message. */
static void reused_seal(EVP_CIPHER_CTX *x, size_t n) {
    int l = 0;
    RAND_bytes(nonce, 12);
    EVP_EncryptInit_ex2(x, NULL, NULL, nonce, NULL);
    EVP_EncryptUpdate(x, NULL, &l, (const unsigned char *)ctx, (int)strlen(ctx));
    EVP_EncryptUpdate(x, out, &l, pt, (int)n);
    EVP_EncryptFinal_ex(x, out + l, &l);
    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, tag);
}

#define BENCH(var, iters, stmt) do { \
    for (int w_ = 0; w_ < (iters) / 10; w_++) { stmt; } \
    double t0_ = now_ns(); \
    for (int i_ = 0; i_ < (iters); i_++) { stmt; } \
    var = (now_ns() - t0_) / (iters); } while (0)

int main(void) {
    const char *cfg = "{\"allow_inline_secrets\": true, \"fields\": {\"keys\": [{\"id\": \"2026-01\", "
                      "\"secret\": {\"value\": \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\", \"encoding\": \"hex\"}}]}}";
    bitsec_runtime *rt = NULL;
    if (bitsec_runtime_open(cfg, strlen(cfg), &rt) != BITSEC_OK) {
        fprintf(stderr, "open: %s\n", bitsec_last_error());
        return 1;
    }
    EVP_CIPHER *gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *reused = EVP_CIPHER_CTX_new();
    RAND_bytes(key, 32);
    RAND_bytes(pt, sizeof pt);
    EVP_EncryptInit_ex2(reused, gcm, key, NULL, NULL);
    const size_t sizes[] = {32, 1024};
    const int iters = 200000;
    printf("## fields (C): bitsec vs the raw OpenSSL AES-256-GCM AEAD\n\n");
    printf("%d iterations each; context of %zu bytes; ns/op; ratio = bitsec / raw AEAD (new EVP_CIPHER_CTX per message)\n\n", iters, strlen(ctx));
    printf("| size | operation | raw AEAD | raw AEAD, reused ctx | bitsec binary | bitsec text | binary / raw | text / raw |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (size_t s = 0; s < 2; s++) {
        size_t n = sizes[s];
        char tok[4096], tokb[4096];
        size_t tl = 0, tbl = 0, ol = 0;
        int32_t reason = -1;
        double raw_e, reuse_e, bin_e, txt_e, raw_d, bin_d, txt_d;
        BENCH(raw_e, iters, raw_seal(gcm, n));
        BENCH(reuse_e, iters, reused_seal(reused, n));
        BENCH(bin_e, iters, sink = bitsec_encrypt_field(rt, pt, n, ctx, strlen(ctx), BITSEC_FIELD_BINARY, tokb, sizeof tokb, &tbl));
        BENCH(txt_e, iters, sink = bitsec_encrypt_field(rt, pt, n, ctx, strlen(ctx), 0, tok, sizeof tok, &tl));
        printf("| %zu B | encrypt | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f |\n", n, raw_e, reuse_e, bin_e, txt_e, bin_e / raw_e, txt_e / raw_e);
        unsigned char ct[1024], t[16];
        raw_seal(gcm, n);
        memcpy(ct, out, n);
        memcpy(t, tag, 16);
        BENCH(raw_d, iters, raw_open(gcm, n, ct, t));
        BENCH(bin_d, iters, sink = bitsec_decrypt_field(rt, (const uint8_t *)tokb, tbl, ctx, strlen(ctx), out, sizeof out, &ol, &reason));
        if (reason != BITSEC_FIELD_REASON_OK) { fprintf(stderr, "decrypt failed\n"); return 1; }
        BENCH(txt_d, iters, sink = bitsec_decrypt_field(rt, (const uint8_t *)tok, tl, ctx, strlen(ctx), out, sizeof out, &ol, &reason));
        if (reason != BITSEC_FIELD_REASON_OK || ol != n) { fprintf(stderr, "decrypt failed\n"); return 1; }
        printf("| %zu B | decrypt | %.0f | | %.0f | %.0f | %.2f | %.2f |\n", n, raw_d, bin_d, txt_d, bin_d / raw_d, txt_d / raw_d);
    }
    EVP_CIPHER_CTX_free(reused);
    EVP_CIPHER_free(gcm);
    bitsec_runtime_close(rt);
    return 0;
}
