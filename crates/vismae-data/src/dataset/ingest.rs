//! `vismae ingest`: walks files and folders, reads every image (format by content), normalises it
//! (window from the header or the user, or the documented fallback), converts it to grey, resizes
//! it (antialiased bilinear), drops exact duplicates by pixel hash, and appends it to the dataset
//! in fixed-size shards. Re-running after a kill resumes: committed shards are kept, their images
//! are not read again, and temporary files of the interrupted shard are removed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use vismae_run::lock::DirLock;
use vismae_run::run_dir::{append_whole, write_atomic};

use super::{DatasetInfo, FORMAT_VERSION, ImageRecord, Skipped, origin_key, read_info, read_manifests, shard_paths};
use crate::error::{DataError, Reason};
use crate::intensity::to_u8;
use crate::limits::Limits;
use crate::modality::{DicomFacts, ModalityRules, ModalitySource, decide, non_image_reason};
use crate::source::{NormaliseOptions, SliceOptions, Source};

/// Settings of an ingest run.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Image side after resizing.
    pub size: usize,
    /// Modalities the user gave (for the whole run, or per folder); otherwise each file's own
    /// (DICOM Modality, header field, sidecar, nnU-Net channel, BIDS name; see [`crate::modality`]).
    pub modalities: ModalityRules,
    /// Keep DICOM objects whose SOP class is not an image (dose grids, segmentations, ...) when
    /// they carry pixel data; they are skipped by default.
    pub keep_non_image: bool,
    /// Skip images whose modality nothing states (instead of recording them as `unknown`).
    pub require_modality: bool,
    /// Volume slicing.
    pub slices: SliceOptions,
    /// Intensity normalisation.
    pub normalise: NormaliseOptions,
    /// Worker threads for decoding.
    pub jobs: usize,
    /// Images per shard.
    pub shard_capacity: usize,
    /// Keep colour as 3 channels (grey images are then replicated); otherwise everything is grey.
    pub keep_rgb: bool,
    /// What one file may make the readers allocate; a file over a limit is skipped as
    /// [`Reason::TooLarge`].
    pub limits: Limits,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            size: 224,
            modalities: ModalityRules::default(),
            keep_non_image: false,
            require_modality: false,
            slices: SliceOptions::default(),
            normalise: NormaliseOptions::default(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shard_capacity: 1024,
            keep_rgb: false,
            limits: Limits::default(),
        }
    }
}

/// What one ingest run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestReport {
    /// Files looked at.
    pub files: usize,
    /// Images added by this run, by modality.
    pub ingested: BTreeMap<String, usize>,
    /// Images added by this run, by modality and how it was decided.
    pub modality_sources: BTreeMap<String, BTreeMap<ModalitySource, usize>>,
    /// Warnings naming files (e.g. an invalid Modality value, recorded as unknown).
    pub warnings: Vec<String>,
    /// Images already in the dataset from an earlier run (not read again).
    pub already_present: usize,
    /// Empty volume slices left out.
    pub empty_slices: usize,
    /// Files or images not ingested, by reason.
    pub skipped: BTreeMap<Reason, usize>,
    /// Images in the dataset after the run.
    pub total: usize,
    /// Shards in the dataset after the run.
    pub shards: usize,
}

impl IngestReport {
    /// Images added by this run.
    pub fn ingested_total(&self) -> usize {
        self.ingested.values().sum()
    }
}

/// Progress of an ingest run, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Files finished.
    pub files_done: usize,
    /// Files in total.
    pub files_total: usize,
    /// Images added so far.
    pub images: usize,
}

/// Lists the files under `sources` (recursively; within a folder its files in name order, then its
/// sub-folders in name order; hidden entries left out), as absolute paths.
pub fn walk(sources: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for src in sources {
        let src = std::fs::canonicalize(src).map_err(|e| DataError::new(src, Reason::Io, e.to_string()))?;
        if !src.is_dir() {
            out.push(src);
            continue;
        }
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| DataError::new(&dir, Reason::Io, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<PathBuf>, Vec<PathBuf>) = entries.into_iter().partition(|p| p.is_dir());
            out.extend(files);
            stack.extend(dirs.into_iter().rev());
        }
    }
    Ok(out)
}

struct Prepared {
    record: ImageRecord,
    pixels: Vec<u8>,
}

/// The modality decided for a file's images.
struct FileModality {
    modality: String,
    source: ModalitySource,
}

enum Outcome {
    Image(Box<Prepared>),
    Present,
    Empty,
    Skip(Skipped),
    Warn(String),
}

/// 128 bits of BLAKE3: the in-memory form of origin keys and pixel hashes (16 bytes an image,
/// so resuming a dataset of millions of images costs tens of megabytes, not its manifests' size).
fn key128(s: &str) -> u128 {
    let h = blake3::hash(s.as_bytes());
    u128::from_le_bytes(h.as_bytes()[..16].try_into().unwrap_or_default())
}

fn skip(e: DataError) -> Outcome {
    Outcome::Skip(Skipped { path: e.path, reason: e.reason, message: e.message })
}

/// Reads and prepares every image of one file.
fn prepare(path: &Path, opts: &IngestOptions, present: &HashSet<u128>) -> Vec<Outcome> {
    let source = match Source::open_with(path, &opts.slices, &opts.limits) {
        Ok(s) => s,
        Err(e) => return vec![skip(e)],
    };
    let mut out = Vec::with_capacity(source.len() + 1);
    let dicom_meta = match &source {
        Source::Dicom(d) => Some(&d.meta),
        _ => None,
    };
    if let Some(m) = dicom_meta
        && !opts.keep_non_image
        && let Some(why) = non_image_reason(m.sop_class_uid.as_deref(), m.modality.as_deref())
    {
        return vec![Outcome::Skip(Skipped { path: path.into(), reason: Reason::NotAnImage, message: why })];
    }
    let facts =
        dicom_meta.map(|m| DicomFacts { modality: m.modality.as_deref(), sop_class: m.sop_class_uid.as_deref() });
    let decision = decide(path, facts, &opts.modalities);
    if let Some(w) = decision.warning {
        out.push(Outcome::Warn(w));
    }
    if opts.require_modality && decision.source == ModalitySource::Unknown {
        out.push(Outcome::Skip(Skipped {
            path: path.into(),
            reason: Reason::UnknownModality,
            message: "nothing states this file's modality (no DICOM Modality, header field, sidecar, nnU-Net channel, BIDS name or --modality NAME=PATH)".into(),
        }));
        return out;
    }
    let file_modality = FileModality { modality: decision.modality, source: decision.source };
    for k in 0..source.len() {
        let raw = match source.image(k, &opts.slices) {
            Ok(Some(raw)) => raw,
            Ok(None) => {
                out.push(Outcome::Empty);
                continue;
            }
            Err(e) => {
                out.push(skip(e));
                continue;
            }
        };
        let o = &raw.origin;
        if present.contains(&key128(&origin_key(&o.path, o.index, o.plane, o.t))) {
            out.push(Outcome::Present);
            continue;
        }
        let (norm_img, normalisation) = raw.normalise(&NormaliseOptions { keep_rgb: opts.keep_rgb, ..opts.normalise });
        let norm_img = if opts.keep_rgb && norm_img.channels == 1 { norm_img.replicate(3) } else { norm_img };
        let resized = norm_img.resize_bilinear(opts.size, opts.size);
        let pixels: Vec<u8> = resized.data.iter().map(|&v| to_u8(v)).collect();
        let hash = blake3::hash(&pixels).to_hex()[..32].to_string();
        let dicom = raw.dicom.as_ref();
        out.push(Outcome::Image(Box::new(Prepared {
            record: ImageRecord {
                shard: 0,
                slot: 0,
                source: o.path.clone(),
                format: o.format,
                frame: o.index,
                plane: o.plane,
                t: o.t,
                modality: file_modality.modality.clone(),
                modality_source: Some(file_modality.source),
                patient_id: dicom.and_then(|d| d.patient_id.clone()),
                study_uid: dicom.and_then(|d| d.study_uid.clone()),
                series_uid: dicom.and_then(|d| d.series_uid.clone()),
                normalisation,
                original_size: (raw.raster.width, raw.raster.height),
                spacing: raw.spacing,
                hash,
            },
            pixels,
        })));
    }
    out
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |e| DataError::new(path, Reason::Io, e.to_string())
}

/// A failed write (a full disk, an I/O error) as a data error naming the file.
fn write_err(e: vismae_run::RunError) -> DataError {
    match e {
        vismae_run::RunError::Io { path, source } => DataError::new(
            &path,
            Reason::Io,
            format!("cannot write: {source}; nothing torn is left, rerun to continue"),
        ),
        other => DataError::new(Path::new(""), Reason::Io, other.to_string()),
    }
}

/// Writes shard `n` (data, then manifest), each whole through a temporary file and a rename.
fn commit_shard(root: &Path, n: usize, records: &mut [ImageRecord], pixels: &[u8]) -> Result<(), DataError> {
    let (data, manifest) = shard_paths(root, n);
    for (slot, r) in records.iter_mut().enumerate() {
        r.shard = n;
        r.slot = slot;
    }
    write_atomic(&data, pixels).map_err(write_err)?;
    let mut text = String::new();
    for r in records.iter() {
        text.push_str(&serde_json::to_string(r).map_err(|e| DataError::new(&manifest, Reason::Io, e.to_string()))?);
        text.push('\n');
    }
    write_atomic(&manifest, text.as_bytes()).map_err(write_err)
}

/// Takes the dataset's lock (one writer at a time), creating the folder if it is new; a folder
/// that holds other files is left untouched.
fn lock(root: &Path) -> Result<DirLock, DataError> {
    if !root.join("dataset.json").exists() && has_files(root)? {
        return Err(not_a_dataset(root));
    }
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    DirLock::acquire(root).map_err(|e| match e {
        vismae_run::RunError::Locked { pid, .. } => DataError::new(
            root,
            Reason::InUse,
            format!(
                "another vismae process ({}) is writing this dataset: wait for it to finish or stop it (a killed process leaves no lock behind)",
                pid.map_or("pid unknown".into(), |p| format!("pid {p}"))
            ),
        ),
        e => DataError::new(root, Reason::Io, e.to_string()),
    })
}

/// Whether `root` holds anything but a lock file.
fn has_files(root: &Path) -> Result<bool, DataError> {
    vismae_run::lock::holds_files(root).map_err(|e| DataError::new(root, Reason::Io, e.to_string()))
}

fn not_a_dataset(root: &Path) -> DataError {
    DataError::new(
        root,
        Reason::BadArgument,
        "the folder holds files but no dataset.json: not a vismae dataset; choose an empty or new folder",
    )
}

/// `sources` with the folders of `inputs` added (each folder, or the folder of each file), sorted.
fn with_sources(sources: &[String], inputs: &[PathBuf]) -> Vec<String> {
    let mut all: std::collections::BTreeSet<String> = sources.iter().cloned().collect();
    for p in inputs {
        let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        let dir = if abs.is_dir() { abs } else { abs.parent().map(Path::to_path_buf).unwrap_or(abs) };
        all.insert(dir.display().to_string());
    }
    all.into_iter().collect()
}

/// Opens (or creates) the dataset at `root` for appending; removes leftovers of an interrupted run.
fn open_for_append(root: &Path, opts: &IngestOptions, inputs: &[PathBuf]) -> Result<DatasetInfo, DataError> {
    let info_path = root.join("dataset.json");
    let info = if info_path.exists() {
        let info = read_info(root)?;
        let channels = if opts.keep_rgb { 3 } else { 1 };
        if info.channels != channels {
            return Err(DataError::new(
                &info_path,
                Reason::BadArgument,
                format!(
                    "the dataset holds {}-channel images; {} --keep-rgb to add to it",
                    info.channels,
                    if info.channels == 3 { "use" } else { "drop" }
                ),
            ));
        }
        if info.size != opts.size {
            return Err(DataError::new(
                &info_path,
                Reason::BadArgument,
                format!(
                    "the dataset holds {}px images; ingest with --size {} or into another folder",
                    info.size, info.size
                ),
            ));
        }
        // the folders this run adds go into dataset.json (rewritten only when there are new ones)
        let sources = with_sources(&info.sources, inputs);
        if sources != info.sources {
            let info = DatasetInfo { sources, ..info };
            let text = serde_json::to_string_pretty(&info).unwrap_or_default();
            write_atomic(&info_path, text.as_bytes()).map_err(write_err)?;
            info
        } else {
            info
        }
    } else {
        if has_files(root)? {
            return Err(not_a_dataset(root));
        }
        let channels = if opts.keep_rgb { 3 } else { 1 };
        let info = DatasetInfo {
            version: FORMAT_VERSION,
            size: opts.size,
            channels,
            shard_capacity: opts.shard_capacity,
            sources: with_sources(&[], inputs),
        };
        // dataset.json first: a failure before it leaves the folder empty, so a rerun starts it anew
        let text = serde_json::to_string_pretty(&info).unwrap_or_default();
        write_atomic(&info_path, text.as_bytes()).map_err(write_err)?;
        std::fs::create_dir_all(root.join("shards")).map_err(io_err(root))?;
        info
    };
    let shards = root.join("shards");
    std::fs::create_dir_all(&shards).map_err(io_err(&shards))?;
    for entry in std::fs::read_dir(&shards).map_err(io_err(&shards))?.flatten() {
        let p = entry.path();
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // temporaries, and data whose manifest never landed, belong to an interrupted shard
        // (this process holds the lock: no other writer owns them)
        let orphan = name.ends_with(".u8") && !p.with_extension("jsonl").exists();
        if name.ends_with(".tmp") || name.contains(".tmp-") || orphan {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
    }
    Ok(info)
}

/// Appends the pending skipped entries to `skipped.jsonl` and empties the list.
fn append_skipped(root: &Path, pending: &mut Vec<Skipped>) -> Result<(), DataError> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for s in pending.drain(..) {
        text.push_str(&serde_json::to_string(&s).unwrap_or_default());
        text.push('\n');
    }
    append_whole(&root.join("skipped.jsonl"), text.as_bytes()).map_err(write_err)
}

/// Ingests `sources` into the dataset at `root` (created if new). `progress` is called as files
/// finish. The dataset is locked for the run: a second ingest into it is refused
/// ([`Reason::InUse`], naming the pid of the first). A failed write stops the run naming the file;
/// committed shards are kept and a rerun continues after them.
pub fn ingest(
    sources: &[PathBuf],
    root: &Path,
    opts: &IngestOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<IngestReport, DataError> {
    let _lock = lock(root)?;
    let info = open_for_append(root, opts, sources)?;
    let existing = read_manifests(root, &info)?;
    let mut present: HashSet<u128> = HashSet::new();
    let mut hashes: HashSet<u128> = HashSet::new();
    for r in existing.iter().flatten() {
        present.insert(key128(&r.origin_key()));
        hashes.insert(key128(&r.hash));
    }
    let mut next_shard = existing.len();
    let mut total = existing.iter().map(Vec::len).sum::<usize>();
    drop(existing);

    let files = walk(sources)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .build()
        .map_err(|e| DataError::new(root, Reason::Io, e.to_string()))?;
    let mut report = IngestReport { files: files.len(), ..Default::default() };
    let mut skipped_log = Vec::new();
    let mut records: Vec<ImageRecord> = Vec::new();
    let mut pixels: Vec<u8> = Vec::new();
    let chunk = (opts.jobs.max(1) * 4).max(8);
    let mut done = 0;
    for group in files.chunks(chunk) {
        let outcomes: Vec<Vec<Outcome>> =
            pool.install(|| group.par_iter().map(|f| prepare(f, opts, &present)).collect());
        for file_outcomes in outcomes {
            for o in file_outcomes {
                match o {
                    Outcome::Present => report.already_present += 1,
                    Outcome::Warn(w) => report.warnings.push(w),
                    Outcome::Empty => report.empty_slices += 1,
                    Outcome::Skip(s) => {
                        *report.skipped.entry(s.reason).or_default() += 1;
                        skipped_log.push(s);
                    }
                    Outcome::Image(p) => {
                        if !hashes.insert(key128(&p.record.hash)) {
                            *report.skipped.entry(Reason::Duplicate).or_default() += 1;
                            let src = format!("frame {} of {}", p.record.frame, p.record.source.display());
                            skipped_log.push(Skipped {
                                path: p.record.source.clone(),
                                reason: Reason::Duplicate,
                                message: format!("{src} is identical to an image already in the dataset"),
                            });
                            continue;
                        }
                        *report.ingested.entry(p.record.modality.clone()).or_default() += 1;
                        let how = p.record.modality_source.unwrap_or(ModalitySource::Unknown);
                        *report
                            .modality_sources
                            .entry(p.record.modality.clone())
                            .or_default()
                            .entry(how)
                            .or_default() += 1;
                        records.push(p.record);
                        pixels.extend_from_slice(&p.pixels);
                        if records.len() == info.shard_capacity {
                            commit_shard(root, next_shard, &mut records, &pixels)?;
                            total += records.len();
                            next_shard += 1;
                            records.clear();
                            pixels.clear();
                        }
                    }
                }
            }
            done += 1;
            progress(Progress { files_done: done, files_total: files.len(), images: report.ingested_total() });
        }
        append_skipped(root, &mut skipped_log)?;
    }
    if !records.is_empty() {
        commit_shard(root, next_shard, &mut records, &pixels)?;
        total += records.len();
        next_shard += 1;
    }
    report.total = total;
    report.shards = next_shard;
    append_skipped(root, &mut skipped_log)?;
    let report_path = root.join("ingest_report.json");
    write_atomic(&report_path, serde_json::to_string_pretty(&report).unwrap_or_default().as_bytes())
        .map_err(write_err)?;
    Ok(report)
}
