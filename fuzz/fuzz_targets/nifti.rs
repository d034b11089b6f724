//! Fuzzes NIfTI-1 parsing and slicing: any input must give Ok or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.nii");
    if let Ok(v) = vismae_data::volume::nifti_from_bytes(path, data, || Ok(Vec::new())) {
        for plane in [vismae_data::volume::Plane::Axial, vismae_data::volume::Plane::Sagittal] {
            if v.num_slices(plane) > 0 {
                let _ = v.slice(plane, 0, 0);
            }
        }
    }
});
