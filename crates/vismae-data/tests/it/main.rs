//! The one integration-test binary of vismae-data: conversion against pydicom and nibabel
//! references (`reference`), bad input (`bad_input`), hostile input against the size limits
//! (`untrusted`), and DICOM RTSTRUCT/SEG annotations (`annotations`).

mod annotations;
mod bad_input;
mod dataset;
mod labelled;
mod modalities;
mod reference;
mod untrusted;

/// The fuzz targets' harness (`fuzz/src/harness.rs`): `bad_input` replays the findings through
/// exactly what the fuzzer ran.
#[path = "../../../../fuzz/src/harness.rs"]
mod harness;

use std::path::PathBuf;

/// A path under the repository's `testdata/`.
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

/// A path in this run's scratch folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vismae-data-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}
