/* The driver comes from libFuzzer's runtime. Its own main (unused: bastion-fuzz's main.swift
   calls LLVMFuzzerRunDriver with the chosen harness) needs this symbol to link. */
#include "CFuzzer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)data;
    (void)size;
    return 0;
}
