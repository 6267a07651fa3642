// OpenSSL 3 for Bastion's TLS module: the library's headers, and functions for what Swift
// cannot call (OpenSSL's function-like macros) or should not do itself (callbacks that run
// inside a handshake: session ticket keys, OCSP stapling, SNI).
#ifndef BASTION_CTLS_H
#define BASTION_CTLS_H

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stddef.h>

// The version numbers of TLS 1.0 to 1.3 (TLS1_VERSION...), for Swift.
int btls_version_number(int minor);

// min and max: TLS1_2_VERSION and the like, 0 for the library's bound.
int btls_ctx_set_protocols(SSL_CTX *ctx, int min, int max);

// Options every Bastion context has: no renegotiation, no compression, the server's cipher
// order and a session id context, partial writes, moving write buffers and released idle
// buffers.
void btls_ctx_set_defaults(SSL_CTX *ctx, int server);
// Initialises the library once, before its first use, without its cleanup at exit: a daemon
// exits on SIGTERM with its loops' threads still inside OpenSSL, and OPENSSL_cleanup under
// them fails their calls or crashes them. Also ignores SIGPIPE, as creating an event loop
// does: OpenSSL's socket BIO writes with write(2), and a peer that has gone would raise it.
void btls_init(void);

// Session tickets whose keys rotate every `seconds`; the previous key still decrypts (so a
// ticket is good for up to two periods). Returns 1, or 0 when no randomness was had.
int btls_ctx_rotate_ticket_keys(SSL_CTX *ctx, long seconds);

// `ctx` uses the ticket keys of `from` (rotated there). A listener's certificates share one
// set: OpenSSL decrypts a ticket before SNI chooses the certificate and encrypts a new one
// after, so keys per certificate would never decrypt a ticket of any but the first (as
// OpenSSL's own keys, its session context's, are shared). Returns 1, or 0 when `from` has
// none or `ctx` has its own.
int btls_ctx_share_ticket_keys(SSL_CTX *ctx, SSL_CTX *from);

// Staples `der` (an OCSP response, copied) to every handshake that asks for status.
int btls_ctx_set_ocsp_response(SSL_CTX *ctx, const unsigned char *der, size_t length);

// SNI: `callback(ssl, arg)` runs on the ClientHello's server name; it returns 1 when it
// switched the context or kept the default.
void btls_ctx_set_servername_callback(SSL_CTX *ctx, int (*callback)(SSL *, void *), void *arg);

// The server name a client sent (NULL without one).
const char *btls_servername(const SSL *ssl);

// A client's SNI.
int btls_set_host_name(SSL *ssl, const char *name);

// The library's error queue as one line (emptied), at most `length` - 1 bytes.
void btls_error_text(char *out, size_t length);

// The subject of the peer's certificate in RFC 2253 form, or an empty string.
void btls_peer_subject(const SSL *ssl, char *out, size_t length);

// Whether the peer sent a certificate.
int btls_has_peer_certificate(const SSL *ssl);

// The DNS names of a certificate file's first certificate (subjectAltName, or the common
// name when there is none), each ended by a NUL, in `out`; returns the bytes written, or -1.
long btls_certificate_names(SSL_CTX *ctx, char *out, size_t length);

#endif
