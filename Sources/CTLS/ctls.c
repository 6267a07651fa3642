#include "CTLS.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int btls_version_number(int minor) {
    switch (minor) {
    case 0: return TLS1_VERSION;
    case 1: return TLS1_1_VERSION;
    case 2: return TLS1_2_VERSION;
    case 3: return TLS1_3_VERSION;
    default: return 0;
    }
}

int btls_ctx_set_protocols(SSL_CTX *ctx, int min, int max) {
    return SSL_CTX_set_min_proto_version(ctx, min) && SSL_CTX_set_max_proto_version(ctx, max);
}

static pthread_once_t library_once = PTHREAD_ONCE_INIT;

static void init_library(void) {
    signal(SIGPIPE, SIG_IGN);
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT | OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

void btls_init(void) { pthread_once(&library_once, init_library); }

void btls_ctx_set_defaults(SSL_CTX *ctx, int server) {
    // A peer that closes without close_notify ends its stream as a FIN does (a relay must
    // not lose the other direction over it); a close_notify ends it the same way.
    uint64_t options = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF;
    if (server) options |= SSL_OP_CIPHER_SERVER_PREFERENCE;
    SSL_CTX_set_options(ctx, options);
    // A server that verifies its clients must name the context its sessions belong to, or
    // OpenSSL refuses every resumption (ticket or session id) with an internal error alert
    // ("session id context uninitialized"). One name for all: a session resumes only where
    // its ticket key decrypts it, and those keys are the listener's own.
    if (server) SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"bastion", 7);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
}

// MARK: - Session ticket keys

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    time_t made;
};

struct ticket_ring {
    pthread_mutex_t lock;
    int references;  // the contexts holding it (a listener's certificates share one)
    long seconds;
    int count;  // 0, 1 or 2: keys[0] is the current one, keys[1] the previous
    struct ticket_key keys[2];
};

static int ring_index = -1;
static int ocsp_index = -1;
static int hook_index = -1;
static pthread_once_t indexes_once = PTHREAD_ONCE_INIT;

static void free_ring(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
    (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
    struct ticket_ring *ring = ptr;
    if (ring == NULL || __atomic_sub_fetch(&ring->references, 1, __ATOMIC_ACQ_REL) > 0) return;
    pthread_mutex_destroy(&ring->lock);
    OPENSSL_cleanse(ring->keys, sizeof ring->keys);
    OPENSSL_free(ring);
}

static void free_bytes(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp) {
    (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
    OPENSSL_free(ptr);
}

static void make_indexes(void) {
    ring_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_ring);
    ocsp_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_bytes);
    hook_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_bytes);
}

static int new_key(struct ticket_key *key) {
    if (RAND_bytes(key->name, sizeof key->name) != 1 || RAND_bytes(key->aes, sizeof key->aes) != 1
        || RAND_bytes(key->hmac, sizeof key->hmac) != 1)
        return 0;
    key->made = time(NULL);
    return 1;
}

// The current key, made anew when it is older than the period (the old one kept as previous).
static int current_key(struct ticket_ring *ring, struct ticket_key *out) {
    time_t now = time(NULL);
    if (ring->count == 0 || now - ring->keys[0].made >= ring->seconds || now < ring->keys[0].made) {
        struct ticket_key fresh;
        if (!new_key(&fresh)) return 0;
        if (ring->count > 0) ring->keys[1] = ring->keys[0];
        ring->keys[0] = fresh;
        ring->count = ring->count > 0 ? 2 : 1;
        OPENSSL_cleanse(&fresh, sizeof fresh);
    }
    *out = ring->keys[0];
    return 1;
}

static int set_mac_key(EVP_MAC_CTX *hmac, unsigned char *key) {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hmac, params);
}

static int ticket_callback(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cipher,
                           EVP_MAC_CTX *hmac, int encrypt) {
    struct ticket_ring *ring = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ring_index);
    if (ring == NULL) return encrypt ? -1 : 0;
    struct ticket_key key;
    int result = 1;
    pthread_mutex_lock(&ring->lock);
    if (encrypt) {
        if (!current_key(ring, &key)) result = -1;
    } else {
        result = 0;  // an unknown key: a full handshake
        for (int i = 0; i < ring->count; i++) {
            if (memcmp(ring->keys[i].name, name, 16) == 0
                && time(NULL) - ring->keys[i].made < 2 * ring->seconds) {
                key = ring->keys[i];
                // 2: issue a new ticket. Always in TLS 1.3, whose tickets are each used once
                // (RFC 8446 C.4); in TLS 1.2 when the previous key decrypted it.
                result = i == 0 && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
                break;
            }
        }
    }
    pthread_mutex_unlock(&ring->lock);
    if (result <= 0) return result;
    if (encrypt) {
        memcpy(name, key.name, 16);
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1
            || !EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key.aes, iv))
            result = -1;
    } else if (!EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), NULL, key.aes, iv)) {
        result = -1;
    }
    if (result > 0 && !set_mac_key(hmac, key.hmac)) result = -1;
    OPENSSL_cleanse(&key, sizeof key);
    return result;
}

int btls_ctx_rotate_ticket_keys(SSL_CTX *ctx, long seconds) {
    pthread_once(&indexes_once, make_indexes);
    if (ring_index < 0 || seconds <= 0) return 0;
    struct ticket_ring *ring = OPENSSL_zalloc(sizeof *ring);
    if (ring == NULL) return 0;
    pthread_mutex_init(&ring->lock, NULL);
    ring->references = 1;
    ring->seconds = seconds;
    struct ticket_key first;
    if (!current_key(ring, &first) || !SSL_CTX_set_ex_data(ctx, ring_index, ring)) {
        free_ring(NULL, ring, NULL, 0, 0, NULL);
        return 0;
    }
    OPENSSL_cleanse(&first, sizeof first);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback);
    // Session tickets last as long as a key decrypts them.
    SSL_CTX_set_timeout(ctx, 2 * seconds);
    return 1;
}

int btls_ctx_share_ticket_keys(SSL_CTX *ctx, SSL_CTX *from) {
    struct ticket_ring *ring = ring_index < 0 ? NULL : SSL_CTX_get_ex_data(from, ring_index);
    if (ring == NULL || SSL_CTX_get_ex_data(ctx, ring_index) != NULL) return 0;
    __atomic_add_fetch(&ring->references, 1, __ATOMIC_ACQ_REL);
    if (!SSL_CTX_set_ex_data(ctx, ring_index, ring)) {
        free_ring(NULL, ring, NULL, 0, 0, NULL);
        return 0;
    }
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback);
    SSL_CTX_set_timeout(ctx, 2 * ring->seconds);
    return 1;
}

// MARK: - OCSP stapling

struct stapled {
    size_t length;
    unsigned char bytes[];
};

static int status_callback(SSL *ssl, void *arg) {
    (void)arg;
    struct stapled *response = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ocsp_index);
    if (response == NULL) return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = OPENSSL_malloc(response->length);
    if (copy == NULL) return SSL_TLSEXT_ERR_NOACK;
    memcpy(copy, response->bytes, response->length);
    if (!SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)response->length)) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

int btls_ctx_set_ocsp_response(SSL_CTX *ctx, const unsigned char *der, size_t length) {
    pthread_once(&indexes_once, make_indexes);
    if (ocsp_index < 0 || length == 0) return 0;
    struct stapled *response = OPENSSL_malloc(sizeof *response + length);
    if (response == NULL) return 0;
    response->length = length;
    memcpy(response->bytes, der, length);
    if (!SSL_CTX_set_ex_data(ctx, ocsp_index, response)) {
        OPENSSL_free(response);
        return 0;
    }
    SSL_CTX_set_tlsext_status_cb(ctx, status_callback);
    return 1;
}

// MARK: - Names

struct servername_hook {
    int (*callback)(SSL *, void *);
    void *arg;
};

static int servername_callback(SSL *ssl, int *alert, void *arg) {
    (void)alert;
    struct servername_hook *hook = arg;
    return hook->callback(ssl, hook->arg) ? SSL_TLSEXT_ERR_OK : SSL_TLSEXT_ERR_ALERT_FATAL;
}

void btls_ctx_set_servername_callback(SSL_CTX *ctx, int (*callback)(SSL *, void *), void *arg) {
    pthread_once(&indexes_once, make_indexes);
    // Kept in the context's data: freed with the context.
    if (hook_index < 0) return;
    struct servername_hook *hook = OPENSSL_malloc(sizeof *hook);
    if (hook == NULL) return;
    hook->callback = callback;
    hook->arg = arg;
    if (!SSL_CTX_set_ex_data(ctx, hook_index, hook)) {
        OPENSSL_free(hook);
        return;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_callback);
    SSL_CTX_set_tlsext_servername_arg(ctx, hook);
}

const char *btls_servername(const SSL *ssl) { return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name); }

int btls_set_host_name(SSL *ssl, const char *name) { return (int)SSL_set_tlsext_host_name(ssl, name); }

void btls_error_text(char *out, size_t length) {
    if (length == 0) return;
    out[0] = 0;
    size_t used = 0;
    unsigned long code;
    while ((code = ERR_get_error()) != 0) {
        char one[256];
        const char *reason = ERR_reason_error_string(code);
        if (reason == NULL) {
            ERR_error_string_n(code, one, sizeof one);
            reason = one;
        }
        // The first reason is the most telling; later ones add context.
        int wrote = snprintf(out + used, length - used, "%s%s", used == 0 ? "" : "; ", reason);
        if (wrote < 0 || (size_t)wrote >= length - used) {
            ERR_clear_error();
            break;
        }
        used += (size_t)wrote;
    }
}

void btls_peer_subject(const SSL *ssl, char *out, size_t length) {
    if (length == 0) return;
    out[0] = 0;
    X509 *certificate = SSL_get0_peer_certificate(ssl);
    if (certificate == NULL) return;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) return;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(certificate), 0, XN_FLAG_RFC2253) >= 0) {
        int read = BIO_read(bio, out, (int)(length - 1));
        out[read > 0 ? read : 0] = 0;
    }
    BIO_free(bio);
}

int btls_has_peer_certificate(const SSL *ssl) { return SSL_get0_peer_certificate(ssl) != NULL; }

static long append_name(char *out, size_t length, size_t used, const unsigned char *name, int size) {
    if (size <= 0 || memchr(name, 0, (size_t)size) != NULL) return (long)used;  // an embedded NUL: ignored
    if (used + (size_t)size + 1 > length) return -1;
    memcpy(out + used, name, (size_t)size);
    out[used + (size_t)size] = 0;
    return (long)(used + (size_t)size + 1);
}

long btls_certificate_names(SSL_CTX *ctx, char *out, size_t length) {
    X509 *certificate = SSL_CTX_get0_certificate(ctx);
    if (certificate == NULL) return -1;
    long used = 0;
    int found = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(certificate, NID_subject_alt_name, NULL, NULL);
    if (names != NULL) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names) && used >= 0; i++) {
            const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
            if (name->type != GEN_DNS) continue;
            found = 1;
            used = append_name(out, length, (size_t)used, ASN1_STRING_get0_data(name->d.dNSName),
                               ASN1_STRING_length(name->d.dNSName));
        }
        GENERAL_NAMES_free(names);
    }
    if (!found && used >= 0) {
        X509_NAME *subject = X509_get_subject_name(certificate);
        int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
        if (at >= 0) {
            ASN1_STRING *common = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
            used = append_name(out, length, (size_t)used, ASN1_STRING_get0_data(common), ASN1_STRING_length(common));
        }
    }
    return used;
}
