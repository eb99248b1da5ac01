#ifndef CSECPROXY_OPENSSL_H
#define CSECPROXY_OPENSSL_H
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>

/// Placeholder; the TLS work fills this with wrappers for OpenSSL macros.
static inline long csp_bio_pending(BIO *b) { return BIO_pending(b); }
#endif
