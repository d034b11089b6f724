//! Fuzzes the labelled-set readers (CSV, and JSON datalists): any input must give a set or an
//! error, never a panic, an abort or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vismae_fuzz::harness::open_labelled(data);
});
