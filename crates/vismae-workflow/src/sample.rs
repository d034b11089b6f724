//! The demo's data: from the public files `scripts/fetch-sample-data.sh` gathers (`DIR/raw`), an
//! unlabelled multi-modal pre-training set (`vismae ingest` of everything except the atlas
//! subject and label maps), a labelled nnU-Net set from Colin27 + AAL (five structure groups,
//! the volume cut into axial slabs that serve as cases) and the Br35H brain-MR classification set
//! (its class folders); without them, the same sets made of generated phantoms, so that the demo
//! always runs.

use std::path::{Path, PathBuf};

use serde_json::json;
use vismae_data::dataset::ingest::{IngestOptions, ingest, walk};
use vismae_data::modality::ModalityRules;
use vismae_data::source::SliceOptions;
use vismae_data::volume::{Plane, Volume, nifti_affine, read_nifti, write_nifti_affine};
use vismae_train::phantom::phantom;

use crate::error::{Result, WorkflowError};

/// The sets the demo trains on.
#[derive(Clone, Debug)]
pub struct SampleSets {
    /// The sharded pre-training dataset.
    pub pretrain: PathBuf,
    /// The labelled nnU-Net folder (segmentation).
    pub labelled: PathBuf,
    /// The class folders (classification).
    pub classification: PathBuf,
    /// Its name in tables (`Br35H`, `phantoms`).
    pub classification_name: String,
    /// Where the images came from, in words.
    pub origin: String,
}

/// The Br35H class folders under `raw`, when the fetch script placed them.
fn br35h(raw: &Path) -> Option<PathBuf> {
    let d = raw.join("br35h");
    (d.join("tumour").is_dir() && d.join("no_tumour").is_dir()).then_some(d)
}

/// `n` phantoms as class folders `clean/` and `lesion/` (half each): whether the phantom has a
/// lesion.
fn phantom_classes(out: &Path, n: usize, side: usize, seed: u64) -> Result<()> {
    for c in ["clean", "lesion"] {
        std::fs::create_dir_all(out.join(c)).map_err(io(out))?;
    }
    let (mut count, mut i) = ([0usize; 2], 0u64);
    while count[0] + count[1] < n {
        let p = phantom(seed ^ 0x636c_6173, i, side);
        i += 1;
        let class = usize::from(p.labels.contains(&2));
        if count[class] >= n / 2 {
            continue;
        }
        count[class] += 1;
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        save_grey(&out.join(["clean", "lesion"][class]).join(format!("p{i:05}.png")), side, img)?;
    }
    Ok(())
}

/// AAL (standard 116-region numbering) grouped into the structures the labelled set keeps.
pub const AAL_GROUPS: [(&str, &[std::ops::RangeInclusive<u8>]); 5] = [
    ("frontal", &[1..=28]),
    ("temporal", &[79..=90]),
    ("occipital", &[43..=54]),
    ("deep_grey", &[71..=78]),
    ("cerebellum", &[91..=116]),
];

fn aal_class(v: f32) -> f32 {
    let v = v.round() as u8;
    AAL_GROUPS.iter().position(|(_, rs)| rs.iter().any(|r| r.contains(&v))).map_or(0.0, |k| (k + 1) as f32)
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> WorkflowError + '_ {
    WorkflowError::io(p)
}

/// Colin27 (`ch2.nii.gz`) and AAL (`aal.nii.gz`) as an nnU-Net set of axial slabs of `slab`
/// slices (those holding any labelled structure), one case per slab.
pub fn colin_aal_set(ch2: &Path, aal: &Path, out: &Path, slab: usize) -> Result<usize> {
    let (t1, labels) = (read_nifti(ch2)?, read_nifti(aal)?);
    if t1.dims[..3] != labels.dims[..3] {
        return Err(WorkflowError::invalid(format!(
            "{} is {:?} but {} is {:?}",
            ch2.display(),
            t1.dims,
            aal.display(),
            labels.dims
        )));
    }
    let affine = nifti_affine(ch2)?;
    let [nx, ny, nz, _] = t1.dims;
    let plane = nx * ny;
    let labelled_z: Vec<usize> =
        (0..nz).filter(|&z| labels.data[z * plane..(z + 1) * plane].iter().any(|&v| aal_class(v) > 0.0)).collect();
    let (z0, z1) = (labelled_z.first().copied().unwrap_or(0), labelled_z.last().copied().unwrap_or(0) + 1);
    for d in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(out.join(d)).map_err(io(out))?;
    }
    let mut cases = 0;
    for (k, start) in (z0..z1.saturating_sub(slab - 1)).step_by(slab).enumerate() {
        let range = start * plane..(start + slab) * plane;
        let mut a = affine;
        for row in &mut a {
            row[3] += row[2] * start as f64;
        }
        let vol = |data: Vec<f32>| Volume { dims: [nx, ny, slab, 1], spacing: t1.spacing, data };
        let id = format!("colin_{k:03}");
        write_nifti_affine(
            &out.join(format!("imagesTr/{id}_0000.nii.gz")),
            &vol(t1.data[range.clone()].to_vec()),
            false,
            Some(a),
        )?;
        let lab: Vec<f32> = labels.data[range].iter().map(|&v| aal_class(v)).collect();
        write_nifti_affine(&out.join(format!("labelsTr/{id}.nii.gz")), &vol(lab), true, Some(a))?;
        cases += 1;
    }
    let mut names = serde_json::Map::new();
    names.insert("background".into(), json!(0));
    for (i, (name, _)) in AAL_GROUPS.iter().enumerate() {
        names.insert((*name).into(), json!(i + 1));
    }
    let meta = json!({
        "name": "Colin27AAL", "channel_names": {"0": "T1"}, "labels": names, "numTraining": cases,
        "file_ending": ".nii.gz",
        "description": format!("Colin27 T1 (mricron-data ch2.nii.gz) with AAL regions grouped into 5 structures, cut into axial slabs of {slab} slices (one subject: cases are slabs)"),
    });
    write_json(&out.join("dataset.json"), &meta)?;
    Ok(cases)
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| WorkflowError::invalid(e.to_string()))?;
    Ok(vismae_run::run_dir::write_atomic(path, text.as_bytes())?)
}

fn save_grey(path: &Path, side: usize, v: Vec<u8>) -> Result<()> {
    let img = image::GrayImage::from_raw(side as u32, side as u32, v)
        .ok_or_else(|| WorkflowError::invalid("phantom size"))?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| WorkflowError::invalid(format!("{}: {e}", path.display())))?;
    Ok(vismae_run::run_dir::write_atomic(path, png.get_ref())?)
}

/// `n` labelled phantoms as an nnU-Net set of PNG cases.
fn phantom_set(out: &Path, n: usize, side: usize, seed: u64) -> Result<()> {
    for d in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(out.join(d)).map_err(io(out))?;
    }
    for i in 0..n {
        let p = phantom(seed ^ 0x6c61_6265, i as u64, side);
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        let save = |path: PathBuf, v: Vec<u8>| -> Result<()> { save_grey(&path, side, v) };
        save(out.join(format!("imagesTr/phantom_{i:03}_0000.png")), img)?;
        save(out.join(format!("labelsTr/phantom_{i:03}.png")), p.labels)?;
    }
    let meta = json!({
        "name": "Phantoms", "channel_names": {"0": "grey"}, "labels": {"background": 0, "body": 1, "lesion": 2},
        "numTraining": n, "file_ending": ".png",
    });
    write_json(&out.join("dataset.json"), &meta)?;
    Ok(())
}

/// Files of `raw` that go into pre-training: everything readable except the atlas subject
/// (Colin27, which the labelled set is made of) and label maps.
fn pretrain_sources(raw: &Path) -> Result<Vec<PathBuf>> {
    let skip = ["ch2", "aal", "brodmann", "jhu", "harvardoxford", "aicha", "natbrainlab", "inia19", "_gm_", "_wm_"];
    let files = walk(&[raw.to_path_buf()])?;
    Ok(files
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy().to_lowercase();
            let file = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
            !skip.iter().any(|s| file.contains(s))
                && !name.contains("/doc/")
                && [".dcm", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".png", ".jpg", ".jpeg", ""]
                    .iter()
                    .any(|e| if e.is_empty() { !file.contains('.') } else { file.ends_with(e) })
        })
        .collect())
}

/// The modalities `scripts/fetch-sample-data.sh` states for files that do not state their own
/// (`SD/modalities.tsv`: `MODALITY<TAB>PATH` under `SD/raw`), or `None` when the file is missing.
pub fn modality_rules(sample: &Path) -> Result<Option<ModalityRules>> {
    let path = sample.join("modalities.tsv");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let raw = sample.join("raw");
    let mut values = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (m, p) = line
            .split_once('\t')
            .ok_or_else(|| WorkflowError::invalid(format!("{}: {line:?} is not MODALITY<TAB>PATH", path.display())))?;
        values.push(format!("{}={}", m.trim(), raw.join(p.trim()).display()));
    }
    Ok(Some(ModalityRules::parse(&values).map_err(WorkflowError::Invalid)?))
}

/// Builds (or reuses) the demo's two sets under `out`: from `sample/raw` when it holds the
/// fetched files, else from phantoms.
pub fn build(sample: Option<&Path>, out: &Path, size: usize, seed: u64) -> Result<SampleSets> {
    let pretrain = out.join("pretrain-set");
    let quiet = |_: vismae_data::dataset::ingest::Progress| {};
    let opts = |stride: usize| IngestOptions {
        size,
        slices: SliceOptions { planes: vec![Plane::Axial], stride, skip_empty: true },
        ..IngestOptions::default()
    };
    let raw = sample.map(|s| s.join("raw"));
    let mricron = raw.as_ref().map(|r| r.join("mricron/usr/share/mricron/templates"));
    if let (Some(raw), Some(tpl)) = (&raw, &mricron)
        && tpl.join("ch2.nii.gz").is_file()
        && tpl.join("aal.nii.gz").is_file()
    {
        let labelled = out.join("Dataset001_Colin27AAL");
        let cases = colin_aal_set(&tpl.join("ch2.nii.gz"), &tpl.join("aal.nii.gz"), &labelled, 6)?;
        let sources = pretrain_sources(raw)?;
        // images only, each of a stated modality: DICOM files say theirs, the fetch script the rest
        let rules = sample.map(modality_rules).transpose()?.flatten();
        let ingest_opts =
            IngestOptions { require_modality: rules.is_some(), modalities: rules.unwrap_or_default(), ..opts(3) };
        let report = ingest(&sources, &pretrain, &ingest_opts, &quiet)?;
        let by: Vec<String> = report.ingested.iter().map(|(m, n)| format!("{n} {m}")).collect();
        let skipped: Vec<String> = report.skipped.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let origin = format!(
            "public images from {} ({} files; pre-training images: {}; skipped: {}), labelled set: Colin27 + AAL, {cases} slabs",
            raw.display(),
            sources.len(),
            by.join(", "),
            skipped.join(", ")
        );
        let (classification, classification_name) = match br35h(raw) {
            Some(d) => (d, "Br35H".to_string()),
            None => {
                let d = out.join("phantom-classes");
                phantom_classes(&d, 240, size, seed)?;
                (d, "phantoms".to_string())
            }
        };
        return Ok(SampleSets { pretrain, labelled, classification, classification_name, origin });
    }
    let labelled = out.join("Dataset002_Phantoms");
    phantom_set(&labelled, 120, size, seed)?;
    let unlabelled = out.join("phantoms-unlabelled");
    std::fs::create_dir_all(&unlabelled).map_err(io(&unlabelled))?;
    for i in 0..512u64 {
        let p = phantom(seed, i, size);
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        let path = unlabelled.join(format!("{i:04}.png"));
        save_grey(&path, size, img)?;
    }
    ingest(&[unlabelled], &pretrain, &opts(1), &quiet)?;
    let classification = out.join("phantom-classes");
    phantom_classes(&classification, 240, size, seed)?;
    Ok(SampleSets {
        pretrain,
        labelled,
        classification,
        classification_name: "phantoms".into(),
        origin: "generated phantoms (no sample data found)".into(),
    })
}
