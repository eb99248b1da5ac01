#ifndef CSECPROXY_OPENSSL_H
#define CSECPROXY_OPENSSL_H

// One-line wrappers for OpenSSL 3 function-like macros and cast-carrying constants,
// which the Swift importer cannot see. Nothing here holds state or owns memory.

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <openssl/ocsp.h>

// MARK: - SSL_CTX configuration

static inline int csp_ssl_ctx_set_min_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_min_proto_version(ctx, version);
}

static inline int csp_ssl_ctx_set_max_proto_version(SSL_CTX *ctx, int version) {
    return (int)SSL_CTX_set_max_proto_version(ctx, version);
}

static inline int csp_ssl_ctx_set1_groups_list(SSL_CTX *ctx, const char *list) {
    return (int)SSL_CTX_set1_groups_list(ctx, list);
}

/// The modes every secproxy context carries: buffers released while a connection is idle, and the
/// certificate chain sent exactly as configured. Without `SSL_MODE_NO_AUTO_CHAIN` OpenSSL completes a
/// chain given without intermediates from the context's trust store on every handshake (an
/// `X509_verify_cert` per handshake; for a server with `client_ca`, the client CAs would be sent).
static inline long csp_ssl_ctx_set_default_modes(SSL_CTX *ctx) {
    return SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
}

static inline int csp_ssl_ctx_add1_chain_cert(SSL_CTX *ctx, X509 *x509) {
    return (int)SSL_CTX_add1_chain_cert(ctx, x509);
}

/// Applies the options every secproxy context carries: no compression, no renegotiation,
/// server cipher preference, no SSLv2/3 (implied in 3.0, kept explicit), and optionally no tickets.
static inline void csp_ssl_ctx_set_secure_options(SSL_CTX *ctx, int noTickets) {
    uint64_t options = SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE
        | SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3;
    if (noTickets) {
        options |= SSL_OP_NO_TICKET;
    }
    SSL_CTX_set_options(ctx, options);
}

static inline long csp_ssl_ctx_set_session_cache_mode_server(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
}

/// Client contexts keep sessions in the Swift cache only (the new-session callback takes them).
static inline long csp_ssl_ctx_set_session_cache_mode_client_external(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
}

static inline long csp_ssl_ctx_set_session_cache_mode_off(SSL_CTX *ctx) {
    return SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
}

static inline long csp_ssl_ctx_sess_set_cache_size(SSL_CTX *ctx, long size) {
    return SSL_CTX_sess_set_cache_size(ctx, size);
}

typedef int (*csp_servername_callback)(SSL *ssl, int *alert, void *arg);

static inline void csp_ssl_ctx_set_servername_callback(SSL_CTX *ctx, csp_servername_callback cb, void *arg) {
    SSL_CTX_set_tlsext_servername_callback(ctx, cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, arg);
}

static inline int csp_ssl_ctx_get_ex_new_index(void) {
    return SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

// MARK: - Session tickets

/// Keys the HMAC-SHA256 that OpenSSL hands the ticket key callback (an `EVP_MAC_CTX` of "HMAC"
/// it fetched itself). In C because an `OSSL_PARAM` keeps pointers to its names, which only string
/// literals keep valid; the key bytes are read during the call and not kept.
static inline int csp_evp_mac_ctx_set_hmac_sha256_key(EVP_MAC_CTX *mac, const unsigned char *key, size_t length) {
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key, length);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(mac, params);
}

// MARK: - OCSP stapling

typedef int (*csp_status_callback)(SSL *ssl, void *arg);

static inline void csp_ssl_ctx_set_status_callback(SSL_CTX *ctx, csp_status_callback cb, void *arg) {
    SSL_CTX_set_tlsext_status_cb(ctx, cb);
    SSL_CTX_set_tlsext_status_arg(ctx, arg);
}

static inline int csp_ssl_get_tlsext_status_type(SSL *ssl) { return (int)SSL_get_tlsext_status_type(ssl); }
static inline int csp_tlsext_statustype_ocsp(void) { return TLSEXT_STATUSTYPE_ocsp; }

/// Hands `response` (from `csp_openssl_malloc`) to the connection, which frees it.
static inline int csp_ssl_set_tlsext_status_ocsp_resp(SSL *ssl, unsigned char *response, long length) {
    return (int)SSL_set_tlsext_status_ocsp_resp(ssl, response, length);
}

static inline int csp_ocsp_response_status_successful(void) { return OCSP_RESPONSE_STATUS_SUCCESSFUL; }

static inline int csp_ssl_verify_none(void) { return SSL_VERIFY_NONE; }
static inline int csp_ssl_verify_peer(void) { return SSL_VERIFY_PEER; }
static inline int csp_ssl_verify_fail_if_no_peer_cert(void) { return SSL_VERIFY_FAIL_IF_NO_PEER_CERT; }

static inline int csp_ssl_filetype_pem(void) { return SSL_FILETYPE_PEM; }

static inline unsigned long csp_x509_v_flag_crl_check(void) { return X509_V_FLAG_CRL_CHECK; }

static inline unsigned int csp_x509_check_flag_no_partial_wildcards(void) {
    return X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS;
}

// MARK: - SSL (per connection)

static inline int csp_ssl_set_tlsext_host_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

static inline int csp_ssl_get_ex_new_index(void) {
    return SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static inline int csp_tlsext_nametype_host_name(void) { return TLSEXT_NAMETYPE_host_name; }
static inline int csp_ssl_tlsext_err_ok(void) { return SSL_TLSEXT_ERR_OK; }
static inline int csp_ssl_tlsext_err_noack(void) { return SSL_TLSEXT_ERR_NOACK; }
static inline int csp_ssl_tlsext_err_alert_fatal(void) { return SSL_TLSEXT_ERR_ALERT_FATAL; }
static inline int csp_ssl_ad_unrecognized_name(void) { return SSL_AD_UNRECOGNIZED_NAME; }
static inline int csp_ssl_ad_handshake_failure(void) { return SSL_AD_HANDSHAKE_FAILURE; }

// MARK: - BIO

static inline void csp_bio_set_retry_read(BIO *bio) { BIO_set_retry_read(bio); }
static inline void csp_bio_clear_retry_flags(BIO *bio) { BIO_clear_retry_flags(bio); }
static inline long csp_bio_pending(BIO *b) { return BIO_pending(b); }

// MARK: - Stacks (macros over OPENSSL_sk_* in 3.0)

static inline int csp_sk_GENERAL_NAME_num(const GENERAL_NAMES *names) { return sk_GENERAL_NAME_num(names); }
static inline GENERAL_NAME *csp_sk_GENERAL_NAME_value(const GENERAL_NAMES *names, int i) {
    return sk_GENERAL_NAME_value(names, i);
}

/// The GEN_DNS / GEN_URI payload as an IA5String, or NULL for any other type.
static inline const ASN1_IA5STRING *csp_general_name_ia5(const GENERAL_NAME *name, int type) {
    if (name->type != type) {
        return NULL;
    }
    return (type == GEN_DNS) ? name->d.dNSName : (type == GEN_URI ? name->d.uniformResourceIdentifier : NULL);
}

static inline int csp_gen_dns(void) { return GEN_DNS; }
static inline int csp_gen_uri(void) { return GEN_URI; }

// MARK: - Memory

static inline void csp_openssl_free(void *p) { OPENSSL_free(p); }
static inline void *csp_openssl_malloc(size_t size) { return OPENSSL_malloc(size); }

#endif
