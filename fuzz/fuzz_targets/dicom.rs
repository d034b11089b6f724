//! Fuzzes DICOM parsing and decoding of the first frames: any input must give Ok or an error. Panics
//! inside dependencies that vismae contains (`guard::guarded`) are not crashes; any other panic is.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: vismae_data::guard::install_panic_hook(), |data: &[u8]| {
    let path = std::path::Path::new("fuzz.dcm");
    if let Ok(d) = vismae_data::dicom::DicomFile::from_bytes(path, data) {
        // frames up to 16 MiB keep runs fast; larger claims are bounded by the library's own cap
        if d.meta.rows * d.meta.columns > 4 << 20 {
            return;
        }
        for k in 0..d.meta.frames.min(2) {
            let _ = d.frame(k);
        }
    }
});
