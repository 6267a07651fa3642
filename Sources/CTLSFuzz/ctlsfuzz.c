// A RAND_METHOD (deprecated in OpenSSL 3 but still honoured by RAND_bytes_ex and
// RAND_priv_bytes_ex, which the library and its default provider call for every random
// number) that is a plain counter-based stream on the threads that asked for one.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "CTLSFuzz.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>

static _Thread_local int active;
static _Thread_local uint64_t state;

// splitmix64: good enough to look random to OpenSSL's checks, and the same on every run.
static uint64_t next(void) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int fuzz_bytes(unsigned char *out, int count) {
    if (count < 0) return 0;
    if (!active) {
        // Not a harness thread: OpenSSL's own private generator, called directly (RAND_bytes
        // would come back here).
        EVP_RAND_CTX *own = RAND_get0_private(NULL);
        return own != NULL && EVP_RAND_generate(own, out, (size_t)count, 0, 0, NULL, 0) == 1;
    }
    for (int i = 0; i < count; i += 8) {
        uint64_t word = next();
        size_t take = count - i < 8 ? (size_t)(count - i) : 8;
        memcpy(out + i, &word, take);
    }
    return 1;
}

static int fuzz_seed(const void *buffer, int count) { (void)buffer; (void)count; return 1; }
static int fuzz_add(const void *buffer, int count, double entropy) { (void)buffer; (void)count; (void)entropy; return 1; }
static int fuzz_status(void) { return 1; }

static RAND_METHOD method = {
    .seed = fuzz_seed,
    .bytes = fuzz_bytes,
    .cleanup = NULL,
    .add = fuzz_add,
    .pseudorand = fuzz_bytes,
    .status = fuzz_status,
};

static pthread_once_t installed_once = PTHREAD_ONCE_INIT;
static int installed;

static void install(void) { installed = RAND_set_rand_method(&method) == 1; }

int btlsfuzz_begin(uint64_t seed) {
    pthread_once(&installed_once, install);
    if (!installed) return 0;
    state = seed;
    active = 1;
    return 1;
}

void btlsfuzz_end(void) { active = 0; }
