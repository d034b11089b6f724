//! vismae-cli: argument parsing, backend and device selection, printing and exit codes. Each
//! subcommand turns its arguments into a typed request, calls one library function (vismae-train
//! for runs, vismae-workflow for multi-step work), and prints what it returns; nothing here
//! computes.

mod args;
mod bench_cmd;
mod demo_cmd;
mod evaluate_cmd;
mod finetune_cmd;
mod ingest_cmd;
mod predict_cmd;
mod pretrain_cmd;
mod study_cmd;
mod weights_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vismae_data::convert::{self, ConvertOptions};
use vismae_data::intensity::Normalisation;
use vismae_data::volume::Plane;
use vismae_run::GroupBy;

pub use args::{IntensityArgs, RunFlags};

/// The backend every command runs on: burn's CPU `flex` backend by default, CUDA with the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub type Backend = burn::backend::Flex;
/// The backend every command runs on: burn's CPU `flex` backend by default, CUDA with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;
/// The training backend.
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// `n` training devices: GPUs `0..n` with CUDA; on the CPU the one device, `n` times (each
/// replica then runs in its own thread).
pub fn devices(n: usize) -> Vec<<Backend as burn::tensor::backend::BackendTypes>::Device> {
    #[cfg(feature = "cuda")]
    {
        (0..n.max(1)).map(burn::backend::cuda::CudaDevice::new).collect()
    }
    #[cfg(not(feature = "cuda"))]
    {
        vec![device(); n.max(1)]
    }
}

/// What `devices = 0` (automatic) means on this build: one replica per CPU core (flex runs most
/// kernels on one core, so replicas are ~1.9x faster on 2 cores), or one GPU.
pub fn default_devices() -> usize {
    if cfg!(feature = "cuda") { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// The device of [`Backend`].
pub fn device() -> <Backend as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

#[derive(Parser, Debug)]
#[command(
    name = "vismae",
    version,
    about = "VIS-MAE: masked-autoencoder pre-training and label-efficient fine-tuning for medical images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the demo's sets from the sample data without training: the pre-training set (as `vismae pretrain --data` takes it), the segmentation set and the classification set.
    SampleSets {
        /// Folder filled by scripts/fetch-sample-data.sh; without it, phantoms.
        #[arg(long)]
        sample_data: Option<PathBuf>,
        /// Output folder (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Image side of the pre-training set.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Seed of the phantoms.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// The whole method end to end in a few CPU minutes: pre-train, fine-tune with few labels and with all, evaluate held-out cases, report (on the sample data, or generated phantoms).
    Demo(demo_cmd::DemoArgs),
    /// Write one image of a DICOM, NIfTI, MHA/NRRD or PNG/JPEG/TIFF file as an 8-bit grey PNG, windowed and normalised; or turn a DICOM RTSTRUCT or SEG into a label map (.nii/.nii.gz) on the grid of the series it references.
    Convert {
        /// Input file (format detected from content).
        input: PathBuf,
        /// Output PNG; .nii/.nii.gz for an RTSTRUCT or SEG input; .dcm to write a label map as a DICOM SEG of --series (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// RTSTRUCT/SEG input: the folder of the image series it references (default: the input's folder, searched recursively).
        #[arg(long)]
        series: Option<PathBuf>,
        /// RTSTRUCT/SEG input: the ROI or segment names to keep, in label order (repeatable; default all, in the file's order). Label map to SEG: the segment names of labels 1, 2, ...
        #[arg(long = "roi")]
        rois: Vec<String>,
        #[command(flatten)]
        intensity: IntensityArgs,
        /// DICOM frame or volume slice (volumes default to the middle slice).
        #[arg(long)]
        frame: Option<usize>,
        /// Slicing plane for volumes.
        #[arg(long, value_enum)]
        plane: Option<Plane>,
        /// Resize to SIZE x SIZE (antialiased bilinear) instead of keeping the native size.
        #[arg(long)]
        size: Option<usize>,
        #[command(flatten)]
        limits: args::LimitArgs,
    },
    /// Read DICOM/NIfTI/MHA/NRRD/PNG/JPEG/TIFF files and folders into a sharded pre-training set (appends; resumes after a kill).
    Ingest(ingest_cmd::IngestArgs),
    /// Pre-train the window-masked MAE on a dataset from `vismae ingest` (or continue one with --resume).
    Pretrain(pretrain_cmd::PretrainArgs),
    /// Reconstruct images with MAE weights: original | masked | reconstruction | pasted, as PNG grids.
    Reconstruct(pretrain_cmd::ReconstructArgs),
    /// Run the coordinator of a multi-node run alone (the nodes then get --external-coordinator); runs until stopped.
    Coordinator {
        /// Port to listen on.
        #[arg(long, default_value_t = vismae_train::cluster::DEFAULT_PORT)]
        port: u16,
        /// Address to listen on [default: this machine's address on its default route; never all interfaces].
        #[arg(long, value_name = "HOST")]
        bind: Option<String>,
    },
    /// Metrics from predictions: ROC AUC / average precision (cls) or Dice / precision / recall (seg).
    Evaluate {
        #[command(subcommand)]
        command: evaluate_cmd::EvaluateCommand,
    },
    /// Grouped k-fold splits with nested label fractions (5-100 %), saved like nnU-Net's splits_final.json.
    Split {
        /// A labelled set: nnU-Net folder, datalist .json, .csv, or class folders.
        #[arg(long)]
        data: PathBuf,
        /// Number of folds.
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep together the cases of one patient (when the layout knows it), or treat each case alone.
        #[arg(long, value_enum, default_value = "patient")]
        group_by: GroupBy,
        /// Training fractions, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.25,0.5,0.8,1.0")]
        fractions: Vec<f64>,
        /// Output JSON (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fine-tune for segmentation (seg: Swin-UNet) or classification (cls: Swin classifier), from MAE weights or from scratch.
    Finetune {
        #[command(subcommand)]
        command: finetune_cmd::FinetuneCommand,
    },
    /// Predict with a fine-tuned run: label maps (PNG, NIfTI in the input's geometry) for segmentation, predictions.csv for classification.
    Predict(predict_cmd::PredictArgs),
    /// The paper's evaluation protocol from a study file: every dataset x initialisation x label
    /// fraction x fold fine-tuned and tested on held-out folds, other tools' predictions scored on
    /// the same folds, tables, figures and paired statistics; run it again to continue.
    Study(study_cmd::StudyArgs),
    /// Tables (mean ± sd over folds), label-efficiency figures, training curves, report.md and a
    /// self-contained report.html from finished pre-training and fine-tuning runs.
    Report {
        /// Run folders (pretrain, finetune seg|cls; a run evaluated with `evaluate --out RUN/test` reports test metrics), or one study folder (`vismae study --out`).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Report folder (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Title of the report.
        #[arg(long, default_value = "vismae report")]
        title: String,
    },
    /// Benchmarks: `pretrain` (MAE training steps), `unet` (Swin-UNet inference), `ingest` (scale of ingest and reader).
    Bench(bench_cmd::BenchArgs),
    /// Inspect and convert weight files.
    Weights {
        #[command(subcommand)]
        command: weights_cmd::WeightsCommand,
    },
}

/// Parses the command line, runs the command, and maps errors to exit status 1 with a message.
pub fn main() -> ExitCode {
    vismae_data::guard::install_panic_hook();
    // batch-parallel inference: one worker per core on the CPU build, the one GPU otherwise
    vismae_train::parallel::set_workers(if cfg!(feature = "cuda") { 1 } else { default_devices() });
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vismae convert RS.dcm|SEG.dcm --out labels.nii.gz`: the label map and its JSON sidecar.
fn convert_annotation(
    input: &std::path::Path,
    out: &std::path::Path,
    series: Option<&std::path::Path>,
    rois: &[String],
    kind: vismae_data::annotations::AnnotationKind,
) -> anyhow::Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        anyhow::bail!(
            "{}: the label map of an RTSTRUCT or SEG is written as NIfTI; give --out a .nii or .nii.gz name",
            out.display()
        );
    }
    let sidecar = vismae_data::annotations::sidecar_path(out);
    if sidecar.exists() {
        anyhow::bail!("{} already exists: choose another --out (vismae never overwrites)", sidecar.display());
    }
    let map = vismae_data::annotations::read_labels(input, series, rois)?;
    map.write(out, input)?;
    let what = match kind {
        vismae_data::annotations::AnnotationKind::RtStruct => "RTSTRUCT",
        vismae_data::annotations::AnnotationKind::Seg => "SEG",
    };
    let g = &map.grid;
    println!(
        "{} ({what}) -> {} on series {} ({}x{}x{}), labels in {}",
        input.display(),
        out.display(),
        g.series_uid,
        g.columns,
        g.rows,
        g.slices(),
        sidecar.display()
    );
    for (k, (n, c)) in map.names.iter().zip(map.counts()).enumerate() {
        println!("  {}  {n}: {c} voxels", k + 1);
    }
    for note in &map.notes {
        println!("  note: {note}");
    }
    Ok(())
}

fn describe_norm(n: &Normalisation) -> String {
    match n {
        Normalisation::Window { window, function, from_header } => format!(
            "window {}/{} ({:?}, {})",
            window.center,
            window.width,
            function,
            if *from_header { "from the header" } else { "given" }
        ),
        Normalisation::Range { lo, hi, fallback } => format!("range {lo}..{hi} ({fallback})"),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo_cmd::run(args),
        Command::SampleSets { sample_data, out, size, seed } => {
            let root = vismae_run::RunDir::create(&out)?;
            let s = vismae_workflow::sample::build(sample_data.as_deref(), root.path(), size, seed)?;
            println!("{}", s.origin);
            println!("pre-training set:    {}", s.pretrain.display());
            println!("segmentation set:    {}", s.labelled.display());
            println!("classification set:  {} ({})", s.classification.display(), s.classification_name);
            Ok(())
        }
        Command::Convert { input, out, series, rois, intensity, frame, plane, size, limits } => {
            if out.exists() {
                anyhow::bail!("{} already exists: choose another --out (vismae never overwrites)", out.display());
            }
            if let Some(kind) = vismae_data::annotations::AnnotationKind::sniff_file(&input) {
                return convert_annotation(&input, &out, series.as_deref(), &rois, kind);
            }
            if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("dcm")) {
                let Some(series) = series else {
                    anyhow::bail!("a DICOM SEG is written for a series: give its folder with --series");
                };
                let algorithm = vismae_data::annotations::seg::SegAlgorithm {
                    name: "vismae".into(),
                    version: vismae_run::VISMAE_VERSION.into(),
                    description: format!("converted from {}", input.file_name().unwrap_or_default().to_string_lossy()),
                };
                let (w, grid, classes) =
                    vismae_data::annotations::labels_to_seg(&input, &series, &rois, &out, &algorithm)?;
                println!(
                    "{} -> {} (DICOM SEG, {} segment(s): {}; {} frame(s)) on series {}",
                    input.display(),
                    out.display(),
                    classes.len(),
                    classes.join(", "),
                    w.frames,
                    grid.series_uid
                );
                return Ok(());
            }
            if series.is_some() || !rois.is_empty() {
                anyhow::bail!(
                    "--series and --roi apply to an RTSTRUCT or SEG input, or to a label map written as a SEG (--out NAME.dcm); {} is none of these",
                    input.display()
                );
            }
            let opts = ConvertOptions { normalise: intensity.options(), frame, size, plane, limits: limits.limits() };
            let s = convert::convert(&input, &out, &opts)?;
            println!(
                "{} image {} ({}x{}) -> {} ({}x{}), {}",
                input.display(),
                s.index,
                s.native.0,
                s.native.1,
                out.display(),
                s.written.0,
                s.written.1,
                describe_norm(&s.normalisation)
            );
            Ok(())
        }
        Command::Ingest(args) => ingest_cmd::run(args),
        Command::Predict(args) => predict_cmd::run(args),
        Command::Report { runs, out, title } => {
            if let [dir] = runs.as_slice()
                && vismae_workflow::study::is_study(dir)
            {
                let r = vismae_workflow::study::report(dir, &out)?;
                println!("study report: {} (and report.html, stats.csv, per_case.csv)", r.join("report.md").display());
                return Ok(());
            }
            let r = vismae_report::build(&runs, &out, &title, &[])?;
            println!("{} runs, {} tables, {} figures", runs.len(), r.tables.len(), r.figures.len() / 2);
            println!("report: {} (and {})", r.markdown.display(), r.html.display());
            Ok(())
        }
        Command::Split { data, folds, seed, group_by, fractions, out } => {
            let s = vismae_workflow::split::split(&data, folds, seed, group_by, &fractions, &out)?;
            println!(
                "{} cases in {} groups -> {folds} folds; fractions {:?}; written to {}",
                s.cases,
                s.groups,
                fractions,
                out.display()
            );
            for (k, f) in s.folds.iter().enumerate() {
                println!("fold {k}: train {} val {}", f.train.len(), f.val.len());
            }
            Ok(())
        }
        Command::Evaluate { command } => evaluate_cmd::run(command),
        Command::Finetune { command } => finetune_cmd::run(command),
        Command::Pretrain(args) => pretrain_cmd::run(args),
        Command::Reconstruct(args) => pretrain_cmd::reconstruct(args),
        Command::Coordinator { port, bind } => {
            let host = match bind {
                Some(h) => h,
                None => vismae_train::cluster::default_address()?,
            };
            println!("coordinator listening on {host}:{port} (no authentication: a trusted cluster network only)");
            Ok(vismae_train::cluster::run_coordinator(&host, port)?)
        }
        Command::Study(args) => study_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Weights { command } => weights_cmd::run(command),
    }
}
