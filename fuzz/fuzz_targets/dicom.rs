//! Fuzzes reading a file as `ingest` and `convert` do (dicom seeds; the format is detected by
//! content, so mutations may cross into any reader): any input must give an image or an error.
//! Panics inside dependencies that vismae contains (`guard::guarded`) are not findings; any
//! other panic, an abort, an allocation over the malloc limit or a hang is.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: vismae_data::guard::install_panic_hook(), |data: &[u8]| {
    vismae_fuzz::harness::read_image(data);
});
