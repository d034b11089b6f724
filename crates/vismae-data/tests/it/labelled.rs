//! Labelled layouts: nnU-Net, datalist JSON, the reference CSVs, multi-label CSV, class folders;
//! geometry checks between images and masks.

use std::path::{Path, PathBuf};

use vismae_data::labelled::{Layout, Target, open, seg_pairs};
use vismae_data::volume::{Plane, Volume, write_nifti};

use crate::scratch;

fn fresh(name: &str) -> PathBuf {
    let d = scratch(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn png(path: &Path, w: u32, h: u32, v: u8) {
    let img = image::GrayImage::from_raw(w, h, (0..w * h).map(|i| if i % 3 == 0 { v } else { 0 }).collect())
        .unwrap_or_else(|| panic!("buf"));
    img.save(path).unwrap_or_else(|e| panic!("{e}"));
}

fn vol(nx: usize, ny: usize, nz: usize, f: impl Fn(usize) -> f32) -> Volume {
    Volume { dims: [nx, ny, nz, 1], spacing: [1.0, 1.0, 2.0], data: (0..nx * ny * nz).map(f).collect() }
}

#[test]
fn nnunet_folder_with_geometry_checks() {
    let root = fresh("nnunet");
    std::fs::create_dir_all(root.join("imagesTr")).unwrap_or_default();
    std::fs::create_dir_all(root.join("labelsTr")).unwrap_or_default();
    std::fs::write(
        root.join("dataset.json"),
        r#"{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": 2, "file_ending": ".nii.gz"}"#,
    )
    .unwrap_or_default();
    for case in ["case_001", "case_002"] {
        write_nifti(&root.join(format!("imagesTr/{case}_0000.nii.gz")), &vol(8, 6, 4, |i| i as f32), false)
            .unwrap_or_else(|e| panic!("{e}"));
        write_nifti(&root.join(format!("labelsTr/{case}.nii.gz")), &vol(8, 6, 4, |i| (i % 2) as f32), true)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let set = open(&root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.layout, Layout::NnUnet);
    assert_eq!(set.classes, vec!["background", "liver"]);
    assert_eq!(set.samples.len(), 2);
    assert_eq!(set.samples[0].id, "case_001");
    let pairs = seg_pairs(&set.samples[0], Plane::Axial).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pairs.len(), 4);
    let r = pairs[0].resized(20);
    assert_eq!((r.mask.width, r.mask.height, r.image.width), (20, 20, 20));
    assert!(r.mask.data.iter().all(|&v| v == 0.0 || v == 1.0), "nearest neighbour keeps class indices");
    assert_eq!((pairs[0].image.width, pairs[0].image.height), (8, 6));

    // a mask of another geometry is an error naming the case and both sizes
    write_nifti(&root.join("labelsTr/case_002.nii.gz"), &vol(8, 5, 4, |_| 0.0), true).unwrap_or_else(|e| panic!("{e}"));
    let e = seg_pairs(&set.samples[1], Plane::Axial).unwrap_err().to_string();
    assert!(e.contains("case_002") && e.contains("8x6") && e.contains("8x5"), "{e}");
    // a case without its label file
    std::fs::remove_file(root.join("labelsTr/case_002.nii.gz")).unwrap_or_default();
    let e = open(&root).unwrap_err().to_string();
    assert!(e.contains("case_002") && e.contains("no label file"), "{e}");
}

#[test]
fn csv_layouts_of_the_reference_code() {
    let root = fresh("csv");
    png(&root.join("a.png"), 10, 8, 200);
    png(&root.join("a_mask.png"), 10, 8, 1);
    png(&root.join("b.png"), 10, 8, 100);
    png(&root.join("b_mask.png"), 9, 8, 1);
    std::fs::write(root.join("train_fold1.csv"), "image,mask\na.png,a_mask.png\nb.png,b_mask.png\n")
        .unwrap_or_default();
    let set = open(&root.join("train_fold1.csv")).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.segmentation);
    let pairs = seg_pairs(&set.samples[0], Plane::Axial).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].mask.data.iter().filter(|&&v| v == 1.0).count(), (10usize * 8).div_ceil(3));
    let e = seg_pairs(&set.samples[1], Plane::Axial).unwrap_err().to_string();
    assert!(e.contains("10x8") && e.contains("9x8"), "{e}");

    std::fs::write(root.join("cls.csv"), "image,label,patient_id\na.png,positive,P1\nb.png,no,P1\na.png,2,P2\n")
        .unwrap_or_default();
    let set = open(&root.join("cls.csv")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!set.segmentation);
    let targets: Vec<&Target> = set.samples.iter().map(|s| &s.target).collect();
    assert_eq!(targets, vec![&Target::Class(1), &Target::Class(0), &Target::Class(2)]);
    assert_eq!(set.classes.len(), 3);
    assert_eq!(set.samples[1].group, "P1");
}

#[test]
fn chestxray14_multi_label_csv() {
    let root = fresh("cxr");
    std::fs::create_dir_all(root.join("images")).unwrap_or_default();
    std::fs::write(
        root.join("Data_Entry_2017.csv"),
        "Image Index,Finding Labels,Follow-up #,Patient ID\n00000001_000.png,Cardiomegaly,0,1\n00000001_001.png,Cardiomegaly|Emphysema,1,1\n00000002_000.png,No Finding,0,2\n",
    )
    .unwrap_or_default();
    let set = open(&root.join("Data_Entry_2017.csv")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.layout, Layout::MultiLabelCsv);
    assert!(set.multi_label);
    assert_eq!(set.classes, vec!["Cardiomegaly", "Emphysema"]);
    assert_eq!(set.samples[1].target, Target::Labels(vec![0, 1]));
    assert_eq!(set.samples[2].target, Target::Labels(vec![]));
    assert_eq!(set.samples[0].group, set.samples[1].group);
    assert!(set.samples[0].images[0].ends_with("images/00000001_000.png"));
}

#[test]
fn datalists_and_class_folders() {
    let root = fresh("datalist");
    png(&root.join("x.png"), 4, 4, 9);
    std::fs::write(
        root.join("cls.json"),
        r#"{"labels": {"0": "benign", "1": "malignant"}, "training": [{"image": "x.png", "label": 1, "patient_id": "p9"}, {"image": "x.png", "label": 0}]}"#,
    )
    .unwrap_or_default();
    let set = open(&root.join("cls.json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.classes, vec!["benign", "malignant"]);
    assert_eq!(set.samples[0].group, "p9");
    std::fs::write(root.join("seg.json"), r#"{"training": [{"image": "x.png", "label": "x.png"}]}"#)
        .unwrap_or_default();
    assert!(open(&root.join("seg.json")).unwrap_or_else(|e| panic!("{e}")).segmentation);
    std::fs::write(root.join("bad.json"), r#"{"validation": []}"#).unwrap_or_default();
    assert!(open(&root.join("bad.json")).unwrap_err().to_string().contains("training"));

    let tree = fresh("classes");
    for (c, n) in [("normal", 2), ("pneumonia", 3)] {
        std::fs::create_dir_all(tree.join(c)).unwrap_or_default();
        for i in 0..n {
            png(&tree.join(format!("{c}/{i}.png")), 4, 4, 1);
        }
    }
    let set = open(&tree).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.layout, Layout::ClassFolders);
    assert_eq!(set.classes, vec!["normal", "pneumonia"]);
    assert_eq!(set.samples.iter().filter(|s| s.target == Target::Class(1)).count(), 3);
}
