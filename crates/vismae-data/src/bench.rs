//! `vismae bench ingest`: the scale benchmark of issue 3. Generates N DICOM files (copies of
//! pydicom's `MR_small.dcm` whose first pixels hold the file number, so none is a duplicate),
//! ingests them while sampling the process's resident memory, then reads one epoch of batches.
//! Prints rates and memory; a program that measures, not a test.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::dataset::ingest::{IngestOptions, ingest};
use crate::dataset::reader::{Filter, LoaderOptions, ShardedDataset, epoch_batches};
use crate::error::{DataError, Reason};

const TEMPLATE: &[u8] = include_bytes!("../../../testdata/dicom/MR_small.dcm");

/// Resident and peak resident memory of this process in MiB (Linux `/proc/self/status`).
pub fn memory_mib() -> Option<(f64, f64)> {
    Some((status_mib("VmRSS:")?, status_mib("VmHWM:")?))
}

/// One `/proc/self/status` field in MiB: `RssAnon:` is the process's own memory, `RssFile:` the
/// file pages it has mapped (for the reader: shard pages, reclaimable page cache).
pub fn status_mib(name: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// What the benchmark measured.
#[derive(Clone, Debug)]
pub struct ScaleReport {
    /// Files generated and ingested.
    pub images: usize,
    /// Seconds to ingest.
    pub ingest_s: f64,
    /// Resident memory (MiB) after 0%, 10%, ..., 100% of the files.
    pub rss_samples: Vec<(usize, f64)>,
    /// Peak resident memory of the process (MiB).
    pub peak_rss_mib: f64,
    /// Seconds for one epoch of batches.
    pub reader_s: f64,
    /// During the epoch, at 0%, 10%, ...: (images read, anonymous RSS MiB, file-backed RSS MiB).
    pub reader_samples: Vec<(usize, f64, f64)>,
    /// Peak resident memory (MiB) when ingest ended, before reading.
    pub ingest_peak_mib: f64,
    /// Bytes of shard data.
    pub dataset_bytes: u64,
}

/// Generates `images` files under `dir/src`, ingests them into `dir/dataset` at `size` px with
/// `jobs` threads, and reads the dataset once in batches of 64. `dir` must be new or empty.
pub fn scale(
    dir: &Path,
    images: usize,
    size: usize,
    jobs: usize,
    say: &dyn Fn(&str),
) -> Result<ScaleReport, DataError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| DataError::new(&p, Reason::Io, e.to_string())
    };
    if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(DataError::new(dir, Reason::BadArgument, "the benchmark folder must be new or empty"));
    }
    let src = dir.join("src");
    let end = crate::dicom::pixel_data_end(TEMPLATE)
        .ok_or_else(|| DataError::new(dir, Reason::Corrupt, "template has no pixel data"))?;
    let pixel_start = end - 64 * 64 * 2;
    say(&format!("generating {images} DICOM files in {}", src.display()));
    let mut bytes = TEMPLATE.to_vec();
    for i in 0..images {
        let sub = src.join(format!("{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub).map_err(io(&sub))?;
        }
        // the first 8 pixels carry the number's base-8 digits as values 200 apart, which stay
        // distinct after the file's 600/1600 window: every file is a different image
        for k in 0..8 {
            let v = (((i >> (3 * k)) & 7) * 200) as u16;
            bytes[pixel_start + 2 * k..pixel_start + 2 * k + 2].copy_from_slice(&v.to_le_bytes());
        }
        let f = sub.join(format!("{i:07}.dcm"));
        std::fs::write(&f, &bytes).map_err(io(&f))?;
    }
    let root = dir.join("dataset");
    let opts = IngestOptions { size, jobs, ..Default::default() };
    let samples = std::sync::Mutex::new(vec![(0usize, memory_mib().map_or(0.0, |m| m.0))]);
    let step = (images / 10).max(1);
    say("ingesting");
    let t = Instant::now();
    let report = ingest(&[src], &root, &opts, &|p| {
        if p.files_done % step == 0
            && let (Ok(mut s), Some((rss, _))) = (samples.lock(), memory_mib())
        {
            s.push((p.files_done, rss));
        }
    })?;
    let ingest_s = t.elapsed().as_secs_f64();
    if report.ingested_total() != images {
        return Err(DataError::new(
            &root,
            Reason::Corrupt,
            format!("ingested {} of {images} images: {:?}", report.ingested_total(), report.skipped),
        ));
    }
    let ingest_peak_mib = memory_mib().map_or(0.0, |m| m.1);
    say("reading one epoch");
    let ds = Arc::new(ShardedDataset::open(&root, &Filter::default())?);
    let lo = LoaderOptions { batch_size: 64, seed: 0, workers: jobs, hflip: true, drop_last: false };
    let t = Instant::now();
    let mut seen = 0;
    let mut reader_samples = Vec::new();
    let sample = |n: usize| (n, status_mib("RssAnon:").unwrap_or(0.0), status_mib("RssFile:").unwrap_or(0.0));
    reader_samples.push(sample(0));
    for b in epoch_batches(ds.clone(), &lo, 0) {
        let before = seen;
        seen += b.indices.len();
        if seen / step.max(1) != before / step.max(1) {
            reader_samples.push(sample(seen));
        }
    }
    let reader_s = t.elapsed().as_secs_f64();
    if seen != images {
        return Err(DataError::new(&root, Reason::Corrupt, format!("the reader returned {seen} of {images} images")));
    }
    let dataset_bytes = (0..report.shards)
        .map(|n| std::fs::metadata(crate::dataset::shard_paths(&root, n).0).map_or(0, |m| m.len()))
        .sum();
    Ok(ScaleReport {
        images,
        ingest_s,
        rss_samples: samples.into_inner().unwrap_or_default(),
        peak_rss_mib: memory_mib().map_or(0.0, |m| m.1),
        reader_s,
        reader_samples,
        ingest_peak_mib,
        dataset_bytes,
    })
}
