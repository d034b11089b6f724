//! `vismae ingest`: arguments, a progress bar, and the summary table.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vismae_data::dataset::ingest::{IngestOptions, ingest};
use vismae_data::source::SliceOptions;
use vismae_data::volume::Plane;

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Files and folders to read (folders recursively; format detected from content).
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    /// Dataset folder: created if new, appended to if it already holds a vismae dataset.
    #[arg(long)]
    out: PathBuf,
    /// Modality: `auto` (what each file says: the DICOM Modality tag, a MetaImage/NRRD header field,
    /// a JSON sidecar, an nnU-Net channel name, a BIDS name), a name for the whole run (CT, MR, PET,
    /// NM, XR, US, ...), or NAME=PATH for the files under a folder (repeatable).
    #[arg(long, default_value = "auto")]
    modality: Vec<String>,
    /// Keep DICOM objects that are not images (RT Dose, Segmentation, ...) when they carry pixel data.
    #[arg(long)]
    keep_non_image: bool,
    /// Skip images whose modality nothing states, instead of recording them as `unknown`.
    #[arg(long)]
    require_modality: bool,
    /// Planes to slice volumes along, comma-separated: axial, coronal, sagittal.
    #[arg(long, value_enum, default_value = "axial", value_delimiter = ',')]
    planes: Vec<Plane>,
    /// Take every N-th volume slice.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Keep volume slices whose values are all equal (left out by default).
    #[arg(long)]
    keep_empty: bool,
    /// Image side after resizing (antialiased bilinear).
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Decoding threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    #[command(flatten)]
    intensity: crate::args::IntensityArgs,
    /// Images per shard.
    #[arg(long, default_value_t = 1024)]
    shard_size: usize,
    /// Keep colour (e.g. ultrasound) as 3 channels; grey images are replicated. Default: all grey.
    #[arg(long)]
    keep_rgb: bool,
    #[command(flatten)]
    limits: crate::args::LimitArgs,
}

pub fn run(a: IngestArgs) -> anyhow::Result<()> {
    if a.size < 16 || a.shard_size == 0 || a.stride == 0 {
        anyhow::bail!("--size must be at least 16, --shard-size and --stride at least 1");
    }
    let opts = IngestOptions {
        size: a.size,
        modalities: vismae_data::modality::ModalityRules::parse(&a.modality).map_err(anyhow::Error::msg)?,
        keep_non_image: a.keep_non_image,
        require_modality: a.require_modality,
        slices: SliceOptions { planes: a.planes.clone(), stride: a.stride, skip_empty: !a.keep_empty },
        normalise: a.intensity.options(),
        jobs: a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        shard_capacity: a.shard_size,
        keep_rgb: a.keep_rgb,
        limits: a.limits.limits(),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} files {msg} ({elapsed}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix("ingest");
    let report = ingest(&a.sources, &a.out, &opts, &|p| {
        bar.set_length(p.files_total as u64);
        bar.set_position(p.files_done as u64);
        bar.set_message(format!("{} images", p.images));
    })?;
    bar.finish_and_clear();

    println!("ingested into {} ({} files read)", a.out.display(), report.files);
    println!("{:<12} {:>10}  decided by", "modality", "images");
    for (m, n) in &report.ingested {
        let how: Vec<String> = report
            .modality_sources
            .get(m)
            .map(|by| by.iter().map(|(s, k)| format!("{s} ({k})")).collect())
            .unwrap_or_default();
        println!("{m:<12} {n:>10}  {}", how.join(", "));
    }
    println!("{:<12} {:>10}", "total new", report.ingested_total());
    if report.already_present > 0 {
        println!("{:<12} {:>10}  (from an earlier run, not read again)", "present", report.already_present);
    }
    if report.empty_slices > 0 {
        println!("{:<12} {:>10}  (empty volume slices left out)", "empty", report.empty_slices);
    }
    if !report.warnings.is_empty() {
        println!();
        println!("{} warning(s):", report.warnings.len());
        for w in report.warnings.iter().take(10) {
            println!("  {w}");
        }
        if report.warnings.len() > 10 {
            println!("  ... (all in {})", a.out.join("ingest_report.json").display());
        }
    }
    if !report.skipped.is_empty() {
        println!();
        println!("{:<24} {:>8}", "skipped (reason)", "count");
        for (reason, n) in &report.skipped {
            println!("{:<24} {n:>8}", reason.to_string());
        }
        println!("details: {}", a.out.join("skipped.jsonl").display());
    }
    println!("dataset: {} images in {} shard(s)", report.total, report.shards);
    if report.ingested_total() == 0 && report.already_present == 0 {
        anyhow::bail!("no image was ingested");
    }
    Ok(())
}
