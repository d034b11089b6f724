//! Fuzzes the weight-file readers, above all the `.pth` pickle machine, which is fed untrusted
//! pickles: whatever the opcodes say, it must never execute anything, recurse without bound or
//! allocate past what the file holds; any input gives a state dict or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vismae_fuzz::harness_weights::read_weights(data);
});
