#ifndef BITSEC_COPENSSL_SHIM_H
#define BITSEC_COPENSSL_SHIM_H
/* The OpenSSL 3 surface bitsec uses. Only EVP-level APIs; nothing deprecated. */
#include <openssl/opensslv.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/rsa.h>
#include <openssl/kdf.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/param_build.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* Function forms of OpenSSL macros Swift cannot import. */
static inline void bitsec_openssl_free(void *p) { OPENSSL_free(p); }
static inline unsigned long bitsec_openssl_version_num(void) { return OPENSSL_VERSION_NUMBER; }
static inline int bitsec_evp_pkey_rsa(void) { return EVP_PKEY_RSA; }
static inline int bitsec_evp_pkey_rsa_pss(void) { return EVP_PKEY_RSA_PSS; }
static inline int bitsec_evp_pkey_ec(void) { return EVP_PKEY_EC; }
static inline int bitsec_evp_pkey_ed25519(void) { return EVP_PKEY_ED25519; }
static inline int bitsec_rsa_pkcs1_padding(void) { return RSA_PKCS1_PADDING; }
static inline int bitsec_rsa_pkcs1_pss_padding(void) { return RSA_PKCS1_PSS_PADDING; }
static inline int bitsec_rsa_pss_saltlen_digest(void) { return RSA_PSS_SALTLEN_DIGEST; }
static inline int bitsec_evp_ctrl_gcm_get_tag(void) { return EVP_CTRL_GCM_GET_TAG; }
static inline int bitsec_evp_ctrl_gcm_set_tag(void) { return EVP_CTRL_GCM_SET_TAG; }
static inline int bitsec_evp_ctrl_gcm_set_ivlen(void) { return EVP_CTRL_GCM_SET_IVLEN; }
/* TLS client (Redis over TLS). */
static inline int bitsec_ssl_ctx_set_min_tls12(SSL_CTX *ctx) { return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION); }
static inline int bitsec_ssl_set_sni(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }
static inline BIO *bitsec_bio_new_mem_buf(const void *buf, int len) { return BIO_new_mem_buf(buf, len); }

#endif
