/* tokens: bitsec_verify_token vs the raw OpenSSL verification of the same signature.
 *
 * RS256: bitsec (cache off), bitsec (cache hit), and OpenSSL EVP_DigestVerifyInit +
 * EVP_DigestVerify over the same signing input with a pre-built EVP_PKEY (what a careful C
 * program does per token, without any JWT parsing or claim checks).
 * HS256: bitsec vs OpenSSL HMAC (EVP_MAC with a pre-keyed context duplicated per call) plus
 * CRYPTO_memcmp. Prints a markdown table. */
#define _POSIX_C_SOURCE 200809L
#include <bitsec.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "tokens_bench: %s failed: %s\n", what, bitsec_last_error());
    exit(1);
}

/* JSON string escaping for the PEM text in the configuration. */
static void json_escape(const char *in, char *out) {
    for (; *in; in++) {
        if (*in == '\n') { *out++ = '\\'; *out++ = 'n'; }
        else if (*in == '"' || *in == '\\') { *out++ = '\\'; *out++ = *in; }
        else *out++ = *in;
    }
    *out = 0;
}

static int b64url_val(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

static size_t b64url_decode(const char *in, size_t n, unsigned char *out) {
    size_t o = 0; unsigned acc = 0; int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 6) | (unsigned)b64url_val(in[i]);
        bits += 6;
        if (bits >= 8) { bits -= 8; out[o++] = (unsigned char)(acc >> bits); }
    }
    return o;
}

typedef int (*op_fn)(void *);

/* Best of 5 runs of n calls; µs per call. */
static double bench(op_fn fn, void *arg, long n) {
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now_s();
        for (long i = 0; i < n; i++) if (fn(arg) != 1) { fprintf(stderr, "verification failed\n"); exit(1); }
        double dt = (now_s() - t0) / (double)n * 1e6;
        if (dt < best) best = dt;
    }
    return best;
}

struct bs { bitsec_runtime *rt; const char *token; size_t len; char out[4096]; };
static int op_bitsec(void *p) {
    struct bs *b = p;
    int32_t reason = -1; size_t n = 0;
    if (bitsec_verify_token(b->rt, b->token, b->len, 0, &reason, b->out, sizeof b->out, &n) != BITSEC_OK) die("bitsec_verify_token");
    return reason == BITSEC_TOKEN_VALID;
}

struct raw { EVP_PKEY *pkey; const unsigned char *input; size_t input_len; unsigned char sig[512]; size_t sig_len;
             EVP_MAC_CTX *mac; };
static int op_raw_rsa(void *p) {
    struct raw *r = p;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, r->pkey) == 1
          && EVP_DigestVerify(ctx, r->sig, r->sig_len, r->input, r->input_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}
static int op_raw_hmac(void *p) {
    struct raw *r = p;
    unsigned char mac[64]; size_t n = 0;
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(r->mac);
    int ok = EVP_MAC_update(c, r->input, r->input_len) == 1 && EVP_MAC_final(c, mac, &n, sizeof mac) == 1
          && n == r->sig_len && CRYPTO_memcmp(mac, r->sig, n) == 0;
    EVP_MAC_CTX_free(c);
    return ok;
}

static void split(const char *token, struct raw *r) {
    const char *d2 = strrchr(token, '.');
    r->input = (const unsigned char *)token;
    r->input_len = (size_t)(d2 - token);
    r->sig_len = b64url_decode(d2 + 1, strlen(d2 + 1), r->sig);
}

int main(void) {
    static const char secret[] = "bench-secret-of-32-bytes-exactly";
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    if (!rsa) die("EVP_RSA_gen");
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, rsa, NULL, NULL, 0, NULL, NULL);
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    char *pem_z = calloc((size_t)pem_len + 1, 1), *pem_json = calloc((size_t)pem_len * 2 + 1, 1);
    memcpy(pem_z, pem, (size_t)pem_len);
    json_escape(pem_z, pem_json);
    char *config = malloc(strlen(pem_json) + 1024);
    bitsec_runtime *rt[2];
    for (int c = 0; c < 2; c++) {
        sprintf(config, "{\"allow_inline_secrets\": true, \"tokens\": {\"keys\": ["
                "{\"kid\": \"rsa\", \"alg\": \"RS256\", \"pem\": \"%s\"},"
                "{\"kid\": \"hs\", \"alg\": \"HS256\", \"secret\": {\"value\": \"%s\"}}],"
                "\"issuer\": \"https://auth.bench.example\", \"audience\": \"bench-api\", \"cache_size\": %d}}",
                pem_json, secret, c ? 1024 : 0);
        if (bitsec_runtime_open(config, strlen(config), &rt[c]) != BITSEC_OK) die("bitsec_runtime_open");
    }
    char claims[512], rs_token[2048], hs_token[1024];
    size_t rs_len = 0, hs_len = 0;
    long now = (long)time(NULL);
    snprintf(claims, sizeof claims, "{\"sub\":\"user-42\",\"iss\":\"https://auth.bench.example\",\"aud\":\"bench-api\","
             "\"iat\":%ld,\"exp\":%ld,\"role\":\"manager\",\"scope\":\"inspections:read inspections:write\","
             "\"tenant_id\":\"tenant-7\",\"jti\":\"bench-jti-1\"}", now, now + 3600);
    if (bitsec_token_sign(rt[0], claims, strlen(claims), "rsa", 3, rs_token, sizeof rs_token, &rs_len)) die("sign rsa");
    if (bitsec_token_sign(rt[0], claims, strlen(claims), "hs", 2, hs_token, sizeof hs_token, &hs_len)) die("sign hs");

    struct raw r_rsa = { .pkey = rsa }, r_hs = { 0 };
    split(rs_token, &r_rsa);
    split(hs_token, &r_hs);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    r_hs.mac = EVP_MAC_CTX_new(mac);
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0), OSSL_PARAM_construct_end() };
    EVP_MAC_init(r_hs.mac, (const unsigned char *)secret, strlen(secret), params);

    struct bs b_rs = { rt[0], rs_token, rs_len, {0} }, b_rs_hit = { rt[1], rs_token, rs_len, {0} };
    struct bs b_hs = { rt[0], hs_token, hs_len, {0} }, b_hs_hit = { rt[1], hs_token, hs_len, {0} };
    double raw_rs = bench(op_raw_rsa, &r_rsa, 3000), bit_rs = bench(op_bitsec, &b_rs, 3000);
    double bit_rs_hit = bench(op_bitsec, &b_rs_hit, 200000);
    double raw_hs = bench(op_raw_hmac, &r_hs, 200000), bit_hs = bench(op_bitsec, &b_hs, 200000);
    double bit_hs_hit = bench(op_bitsec, &b_hs_hit, 200000);

    printf("## tokens (C): bitsec_verify_token vs raw OpenSSL\n\n");
    printf("%s; one thread; µs per verification, best of 5. bitsec does the whole JWT check (header, kid, "
           "signature, claims parse, exp/iat/iss/aud, revocation lookup); raw OpenSSL checks the signature only.\n\n",
           OpenSSL_version(OPENSSL_VERSION));
    printf("| operation | µs | vs raw OpenSSL | goal |\n|---|---:|---:|---|\n");
    printf("| RS256 raw OpenSSL (EVP_DigestVerifyInit + EVP_DigestVerify) | %.2f | 1.00× | |\n", raw_rs);
    printf("| RS256 bitsec_verify_token, cache off | %.2f | %.2f× | within 1.1× |\n", bit_rs, bit_rs / raw_rs);
    printf("| RS256 bitsec_verify_token, cache hit | %.2f | %.2f× | |\n", bit_rs_hit, bit_rs_hit / raw_rs);
    printf("| HS256 raw OpenSSL (EVP_MAC_CTX_dup + update + final + CRYPTO_memcmp) | %.2f | 1.00× | |\n", raw_hs);
    printf("| HS256 bitsec_verify_token, cache off | %.2f | %.2f× | ≤ 2 µs |\n", bit_hs, bit_hs / raw_hs);
    printf("| HS256 bitsec_verify_token, cache hit | %.2f | %.2f× | |\n", bit_hs_hit, bit_hs_hit / raw_hs);

    bitsec_runtime_close(rt[0]);
    bitsec_runtime_close(rt[1]);
    EVP_MAC_CTX_free(r_hs.mac);
    EVP_MAC_free(mac);
    EVP_PKEY_free(rsa);
    BIO_free(bio);
    free(pem_z); free(pem_json); free(config);
    return 0;
}
