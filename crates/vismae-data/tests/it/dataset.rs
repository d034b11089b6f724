//! Ingest into shards, resume and append without duplicates, and the training reader.

use std::collections::HashSet;
use std::sync::Arc;

use vismae_data::Reason;
use vismae_data::dataset::ingest::{IngestOptions, ingest};
use vismae_data::dataset::reader::{Filter, LoaderOptions, ShardedDataset, epoch_batches};
use vismae_data::dataset::{read_info, read_manifests, shard_paths};

use crate::{scratch, testdata};

fn opts() -> IngestOptions {
    IngestOptions { size: 32, jobs: 2, shard_capacity: 16, ..Default::default() }
}

#[test]
fn ingest_reports_resumes_and_appends_without_duplicates() {
    let root = scratch("ds-resume");
    let _ = std::fs::remove_dir_all(&root);
    let first = ingest(&[testdata("dicom")], &root, &opts(), &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(first.ingested_total() > 20, "{first:?}");
    assert_eq!(first.skipped.get(&Reason::Unsupported), Some(&2), "{first:?}");
    assert_eq!(first.skipped.get(&Reason::Corrupt), Some(&1));
    // the structured report (no pixel data) and the segmentation (pixel data, but a SEG) are not
    // image objects by their SOP class (issue 18; the report used to count as "no pixel data")
    assert_eq!(first.skipped.get(&Reason::NotAnImage), Some(&2));
    let skipped = std::fs::read_to_string(root.join("skipped.jsonl")).unwrap_or_default();
    assert!(skipped.contains("liver_1frame.dcm") && skipped.contains("Segmentation Storage"), "{skipped}");
    // with --keep-non-image the segmentation's frames go in
    let kept = ingest(
        &[testdata("dicom/liver_1frame.dcm")],
        &scratch("ds-keep"),
        &IngestOptions { keep_non_image: true, ..opts() },
        &|_| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(kept.ingested_total() > 0 && !kept.skipped.contains_key(&Reason::NotAnImage), "{kept:?}");
    assert!(first.skipped.contains_key(&Reason::UnknownFormat), "READMEs and licences are skipped as unknown");
    assert_eq!(first.ingested.get("CT"), Some(&2));
    let skipped = std::fs::read_to_string(root.join("skipped.jsonl")).unwrap_or_default();
    assert!(skipped.contains("JPEGLSNearLossless_08.dcm") && skipped.contains("unsupported"), "{skipped}");

    // an interrupted shard: its temporaries and its data without a manifest
    let (data9, _) = shard_paths(&root, first.shards);
    std::fs::write(&data9, b"torn").unwrap_or_default();
    std::fs::write(data9.with_extension("u8.tmp"), b"torn").unwrap_or_default();
    let again = ingest(&[testdata("dicom")], &root, &opts(), &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.ingested_total(), 0, "{again:?}");
    assert_eq!(again.total, first.total);
    assert_eq!(
        again.already_present,
        first.total + first.skipped.get(&Reason::Duplicate).copied().unwrap_or(0)
            - again.skipped.get(&Reason::Duplicate).copied().unwrap_or(0)
    );
    assert!(!data9.exists() && !data9.with_extension("u8.tmp").exists(), "leftovers of the interrupted shard remain");

    // append another source: new shards after the old ones
    let more = ingest(&[testdata("nifti")], &root, &opts(), &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(more.ingested_total() > 0);
    assert_eq!(more.total, first.total + more.ingested_total());
    let info = read_info(&root).unwrap_or_else(|e| panic!("{e}"));
    let shards = read_manifests(&root, &info).unwrap_or_else(|e| panic!("{e}"));
    let hashes: HashSet<&String> = shards.iter().flatten().map(|r| &r.hash).collect();
    assert_eq!(hashes.len(), more.total, "duplicate pixels in the dataset");
    assert!(shards.iter().all(|s| s.len() <= 16));

    // a different size into the same dataset is refused, naming the size
    let e = ingest(&[testdata("nifti")], &root, &IngestOptions { size: 64, ..opts() }, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("32px"), "{e}");
}

#[test]
fn refuses_a_folder_that_is_not_a_dataset() {
    let root = scratch("not-a-dataset");
    std::fs::create_dir_all(&root).unwrap_or_default();
    std::fs::write(root.join("notes.txt"), b"mine").unwrap_or_default();
    let e = ingest(&[testdata("nifti")], &root, &opts(), &|_| {}).unwrap_err();
    assert!(e.to_string().contains("not a vismae dataset"), "{e}");
    assert_eq!(std::fs::read(root.join("notes.txt")).unwrap_or_default(), b"mine");
}

#[test]
fn reader_filters_and_batches_deterministically() {
    let root = scratch("ds-reader");
    let _ = std::fs::remove_dir_all(&root);
    let report =
        ingest(&[testdata("dicom"), testdata("nifti")], &root, &opts(), &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    let ds = ShardedDataset::open(&root, &Filter::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ds.len(), report.total);
    assert_eq!(ds.pixels(0).len(), 32 * 32);
    let mr = ShardedDataset::open(&root, &Filter { modalities: vec!["mr".into()], ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mr.len(), report.ingested["MR"]);
    assert!((0..mr.len()).all(|i| mr.modality(i) == "MR"));

    let ds = Arc::new(ds);
    let lo = LoaderOptions { batch_size: 5, seed: 3, workers: 3, hflip: true, drop_last: false };
    let a: Vec<_> = epoch_batches(ds.clone(), &lo, 0).collect();
    let b: Vec<_> = epoch_batches(ds.clone(), &lo, 0).collect();
    let c: Vec<_> = epoch_batches(ds.clone(), &lo, 1).collect();
    assert_eq!(a.iter().map(|x| x.number).collect::<Vec<_>>(), (0..a.len()).collect::<Vec<_>>());
    assert_eq!(a.iter().map(|x| &x.data).collect::<Vec<_>>(), b.iter().map(|x| &x.data).collect::<Vec<_>>());
    assert_ne!(a[0].indices, c[0].indices);
    let mut seen: Vec<usize> = a.iter().flat_map(|x| x.indices.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..ds.len()).collect::<Vec<_>>(), "an epoch visits every image once");
    assert!(a.iter().all(|x| x.data.iter().all(|v| (0.0..=1.0).contains(v))));
    let dropped: Vec<_> = epoch_batches(ds.clone(), &LoaderOptions { drop_last: true, ..lo }, 0).collect();
    assert_eq!(dropped.len(), ds.len() / 5);
}

#[test]
fn rgb_datasets_keep_colour_and_read_planar() {
    let root = scratch("ds-rgb");
    let _ = std::fs::remove_dir_all(&root);
    let o = IngestOptions { keep_rgb: true, ..opts() };
    let report = ingest(&[testdata("dicom/ExplVR_BigEnd.dcm"), testdata("dicom/MR_small.dcm")], &root, &o, &|_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.ingested_total(), 2);
    let e = ingest(&[testdata("nifti")], &root, &opts(), &|_| {}).unwrap_err();
    assert!(e.to_string().contains("3-channel"), "{e}");
    let ds = Arc::new(ShardedDataset::open(&root, &Filter::default()).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(ds.pixels(0).len(), 32 * 32 * 3);
    let lo = LoaderOptions { batch_size: 2, seed: 0, workers: 1, hflip: false, drop_last: false };
    let batch = epoch_batches(ds.clone(), &lo, 0).next().unwrap_or_else(|| panic!("no batch"));
    assert_eq!(batch.data.len(), 2 * 3 * 32 * 32);
    // the grey MR image has three equal planes; the ultrasound does not
    let plane = |k: usize, c: usize| &batch.data[(k * 3 + c) * 1024..(k * 3 + c + 1) * 1024];
    let grey: Vec<bool> = (0..2).map(|k| plane(k, 0) == plane(k, 1) && plane(k, 1) == plane(k, 2)).collect();
    assert_eq!(grey.iter().filter(|&&g| g).count(), 1, "{grey:?}");
}
