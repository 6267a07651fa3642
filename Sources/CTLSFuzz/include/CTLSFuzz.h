// Deterministic randomness for the tls-server fuzz harness (FuzzHarnesses only; no tool links
// it). A TLS server's answers depend on its random numbers (key shares, signatures' nonces,
// ticket keys), so without this no recorded client could ever finish a handshake with it
// twice, and nothing past the ClientHello would be fuzzed. On a thread between
// btlsfuzz_begin and btlsfuzz_end every random byte OpenSSL asks for comes from a fixed
// stream; other threads (the unit tests run many at once) get OpenSSL's own generator.
#ifndef BASTION_CTLSFUZZ_H
#define BASTION_CTLSFUZZ_H

#include <stdint.h>

// Installs the random method (once per process) and starts this thread's stream at `seed`.
// Returns 0 when OpenSSL refused the method.
int btlsfuzz_begin(uint64_t seed);

// This thread's random bytes are OpenSSL's again.
void btlsfuzz_end(void);

#endif
