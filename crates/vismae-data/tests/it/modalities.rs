//! Pre-training sets hold only images, each with its modality and how it was decided: non-image
//! DICOM objects (pydicom's RT Dose and RT Plan, a SEG) are skipped with their own reason, NIfTI
//! files take theirs from `--modality NAME=PATH`, a MetaImage header, an nnU-Net channel name or a
//! BIDS name, and `--require-modality` leaves out what nothing names.

use vismae_data::Reason;
use vismae_data::dataset::ingest::{IngestOptions, ingest};
use vismae_data::modality::{ModalityRules, ModalitySource};
use vismae_data::volume::{Volume, write_nifti};

use crate::{scratch, testdata};

fn opts() -> IngestOptions {
    IngestOptions { size: 32, jobs: 2, ..Default::default() }
}

#[test]
fn non_image_objects_are_skipped_with_their_own_reason() {
    let root = scratch("mod-objects");
    let _ = std::fs::remove_dir_all(&root);
    let r = ingest(&[testdata("dicom-objects")], &root, &opts(), &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.skipped.get(&Reason::NotAnImage), Some(&2), "{r:?}");
    assert_eq!(r.ingested_total(), 0);
    let log = std::fs::read_to_string(root.join("skipped.jsonl")).unwrap_or_default();
    assert!(
        log.contains("RT Dose Storage (1.2.840.10008.5.1.4.1.1.481.2)") && log.contains("RT Plan Storage"),
        "{log}"
    );
    // kept on request: the dose grid has pixel data, the plan still has none
    let kept = scratch("mod-objects-kept");
    let _ = std::fs::remove_dir_all(&kept);
    let k = ingest(&[testdata("dicom-objects")], &kept, &IngestOptions { keep_non_image: true, ..opts() }, &|_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(k.ingested.get("RTDOSE"), Some(&1), "{k:?}");
    assert_eq!(k.skipped.get(&Reason::NotAnImage), Some(&1));
}

#[test]
fn files_without_a_modality_tag_say_theirs_or_are_given_one() {
    let dir = scratch("mod-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src/bids")).unwrap_or_default();
    // distinct contents (min-max normalisation would make scaled copies duplicates)
    let vol_of = |k: usize| Volume {
        dims: [20, 18, 2, 1],
        spacing: [1.0, 1.0, 1.0],
        data: (0..720).map(|i| ((i * (2 * k + 1)) % (31 + k)) as f32).collect(),
    };
    let vol = vol_of(0);
    write_nifti(&dir.join("src/bids/sub-01_T1w.nii.gz"), &vol, false).unwrap_or_else(|e| panic!("{e}"));
    write_nifti(&dir.join("src/plain.nii.gz"), &vol_of(1), false).unwrap_or_else(|e| panic!("{e}"));
    let raw: Vec<u8> = (0..20 * 18).map(|i| (i % 251) as u8).collect();
    let mut mha = b"ObjectType = Image\nNDims = 2\nDimSize = 20 18\nElementType = MET_UCHAR\nModality = MET_MOD_CT\nElementDataFile = LOCAL\n".to_vec();
    mha.extend(&raw);
    std::fs::write(dir.join("src/ct.mha"), mha).unwrap_or_default();
    let nn = dir.join("src/Dataset009_X/imagesTr");
    std::fs::create_dir_all(&nn).unwrap_or_default();
    std::fs::write(dir.join("src/Dataset009_X/dataset.json"), r#"{"channel_names": {"0": "FLAIR"}}"#)
        .unwrap_or_default();
    write_nifti(&nn.join("case_1_0000.nii.gz"), &vol_of(2), false).unwrap_or_else(|e| panic!("{e}"));
    // the real files: nibabel's anatomical MR volume, given its modality by folder
    std::fs::create_dir_all(dir.join("src/given")).unwrap_or_default();
    std::fs::copy(testdata("nifti/anatomical.nii"), dir.join("src/given/anatomical.nii")).unwrap_or_default();
    let modalities =
        ModalityRules::parse(&[format!("MR={}", dir.join("src/given").display())]).unwrap_or_else(|e| panic!("{e}"));
    let r = ingest(&[dir.join("src")], &dir.join("ds"), &IngestOptions { modalities, ..opts() }, &|_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let by = |m: &str, s: ModalitySource| r.modality_sources.get(m).and_then(|x| x.get(&s)).copied().unwrap_or(0);
    assert!(by("MR", ModalitySource::BidsName) > 0, "{r:?}");
    assert!(by("MR", ModalitySource::NnunetChannel) > 0, "{r:?}");
    assert!(by("MR", ModalitySource::GivenForFolder) > 0, "{r:?}");
    assert_eq!(by("CT", ModalitySource::HeaderField), 1, "{r:?}");
    assert!(by("unknown", ModalitySource::Unknown) > 0, "plain.nii.gz says nothing: {r:?}");
    // required, the unstated file is left out with its own reason
    let strict =
        ingest(&[dir.join("src")], &dir.join("ds2"), &IngestOptions { require_modality: true, ..opts() }, &|_| {})
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(!strict.ingested.contains_key("unknown"), "{strict:?}");
    assert_eq!(
        strict.skipped.get(&Reason::UnknownModality),
        Some(&2),
        "plain.nii.gz and anatomical.nii without the rule: {strict:?}"
    );
}
