//! `convert` output compared pixel by pixel with PNGs computed by pydicom and nibabel
//! (`testdata/*/expected`, written by `scripts/reference/*.py`).

use vismae_data::convert::{ConvertOptions, convert};
use vismae_data::intensity::Normalisation;

use crate::{scratch, testdata};

fn grey(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_luma8();
    (img.width(), img.height(), img.into_raw())
}

/// Converts `dir/file` and returns the largest difference from the reference, in 8-bit levels.
fn max_diff(dir: &str, file: &str) -> u8 {
    let input = testdata(&format!("{dir}/{file}"));
    let stem = file.split('.').next().unwrap_or(file);
    let out = scratch(&format!("{dir}-{stem}.png"));
    let _ = std::fs::remove_file(&out);
    convert(&input, &out, &ConvertOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let (w, h, got) = grey(&out);
    let (rw, rh, want) = grey(&testdata(&format!("{dir}/expected/{stem}.png")));
    assert_eq!((w, h), (rw, rh), "{file}: size");
    got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0)
}

#[test]
fn dicom_conversions_match_pydicom() {
    // exact wherever both sides decode the same integers; one level for lossy YBR JPEG colour
    let cases: [(&str, u8); 16] = [
        ("CT_small.dcm", 0),
        ("693_J2KI.dcm", 0),
        ("MR_small.dcm", 0),
        ("MR_small_RLE.dcm", 0),
        ("MR_small_jp2klossless.dcm", 0),
        ("MR_small_bigendian.dcm", 0),
        ("MR_small_implicit.dcm", 0),
        ("MR_small_padded.dcm", 0),
        ("SC_rgb_rle_2frame.dcm", 0),
        ("SC_rgb_jpeg_dcmtk.dcm", 1),
        ("ExplVR_BigEnd.dcm", 0),
        ("image_dfl.dcm", 0),
        ("JPEG2000.dcm", 0),
        ("examples_ybr_color.dcm", 1),
        ("examples_palette.dcm", 0),
        ("liver_1frame.dcm", 0),
    ];
    let mut failures = Vec::new();
    for (file, tol) in cases {
        let d = max_diff("dicom", file);
        if d > tol {
            failures.push(format!("{file}: max difference {d} > {tol}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn nifti_conversions_match_nibabel() {
    for file in ["anatomical.nii", "example4d.nii.gz", "standard.nii.gz", "resampled_anat_moved.nii"] {
        assert_eq!(max_diff("nifti", file), 0, "{file}");
    }
}

#[test]
fn header_window_user_window_and_resize() {
    let input = testdata("dicom/693_J2KI.dcm");
    let out = scratch("window.png");
    let _ = std::fs::remove_file(&out);
    let s = convert(&input, &out, &ConvertOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(s.normalisation, Normalisation::Window { from_header: true, window, .. } if window.center == 40.0 && window.width == 100.0)
    );
    let opts = ConvertOptions {
        normalise: vismae_data::NormaliseOptions {
            window: Some(vismae_data::intensity::Window { center: -600.0, width: 1500.0 }),
            ..Default::default()
        },
        size: Some(224),
        ..Default::default()
    };
    let _ = std::fs::remove_file(&out);
    let s = convert(&input, &out, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(s.normalisation, Normalisation::Window { from_header: false, .. }));
    assert_eq!(s.written, (224, 224));
    assert_eq!(grey(&out).0, 224);
}

#[test]
fn multi_frame_and_volume_selection() {
    let out = scratch("frame1.png");
    let _ = std::fs::remove_file(&out);
    let opts = ConvertOptions { frame: Some(1), ..Default::default() };
    let s = convert(&testdata("dicom/SC_rgb_rle_2frame.dcm"), &out, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.index, 1);
    let err = convert(
        &testdata("dicom/SC_rgb_rle_2frame.dcm"),
        &scratch("frame9.png"),
        &ConvertOptions { frame: Some(9), ..Default::default() },
    )
    .unwrap_err();
    assert!(err.to_string().contains("out of range") && err.to_string().contains("SC_rgb_rle_2frame.dcm"), "{err}");
    let s = convert(
        &testdata("nifti/anatomical.nii"),
        &scratch("sag.png"),
        &ConvertOptions { plane: Some(vismae_data::volume::Plane::Sagittal), ..Default::default() },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.native, (41, 25));
}
