//! vismae-cli: argument parsing, backend/device selection, and exit codes. Each subcommand
//! resolves its arguments and calls one library function; nothing here computes.

mod demo_cmd;
mod evaluate_cmd;
mod finetune_cmd;
mod ingest_cmd;
mod pretrain_cmd;
mod sample_cmd;
mod weights_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vismae_data::convert::{self, ConvertOptions};
use vismae_data::intensity::{Fallback, Normalisation, WindowArg};
use vismae_data::source::NormaliseOptions;
use vismae_data::volume::Plane;
use vismae_model::Variant;

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

/// `p` made absolute (as given when that fails), for paths recorded in run configs.
pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The device of [`Backend`].
pub fn device() -> <Backend as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

#[derive(Parser, Debug)]
#[command(
    name = "vismae",
    version,
    about = "VIS-MAE: masked-autoencoder pre-training and fine-tuning for medical images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pre-train, transfer and fine-tune on generated phantoms, end to end, in a few CPU minutes.
    Demo(demo_cmd::DemoArgs),
    /// Write one image of a DICOM, NIfTI, MHA/NRRD or PNG/JPEG/TIFF file as an 8-bit grey PNG, windowed and normalised.
    Convert {
        /// Input file (format detected from content).
        input: PathBuf,
        /// Output PNG (must not exist).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        intensity: IntensityArgs,
        /// DICOM frame or volume slice (volumes default to the middle slice).
        #[arg(long)]
        frame: Option<usize>,
        /// Slicing plane for volumes: axial, coronal or sagittal.
        #[arg(long)]
        plane: Option<Plane>,
        /// Resize to SIZE x SIZE (antialiased bilinear) instead of keeping the native size.
        #[arg(long)]
        size: Option<usize>,
    },
    /// Read DICOM/NIfTI/MHA/NRRD/PNG/JPEG/TIFF files and folders into a sharded pre-training set (appends; resumes after a kill).
    Ingest(ingest_cmd::IngestArgs),
    /// Pre-train the window-masked MAE on a dataset from `vismae ingest` (or continue one with --resume).
    Pretrain(pretrain_cmd::PretrainArgs),
    /// Reconstruct images with MAE weights: original | masked | reconstruction | pasted, as PNG grids.
    Reconstruct(pretrain_cmd::ReconstructArgs),
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
        /// Keep together the cases of one `patient` (when the layout knows it) or treat each `case` alone.
        #[arg(long, default_value = "patient")]
        group_by: String,
        /// Training fractions, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.25,0.5,0.8,1.0")]
        fractions: Vec<f64>,
        /// Output JSON (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Fine-tune for segmentation from MAE weights or from scratch.
    Finetune {
        #[command(subcommand)]
        command: finetune_cmd::FinetuneCommand,
    },
    /// Segment images with a `finetune seg` run: PNG masks (pixel = class) for 2-D files, NIfTI label maps with the input's header for NIfTI.
    Predict {
        /// Run folder of `vismae finetune seg` or `finetune cls` (config.json, best.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Images, volumes, or folders holding a DICOM series.
        #[arg(required_unless_present = "data")]
        inputs: Vec<PathBuf>,
        /// A labelled set whose cases to predict instead (outputs named by case id; classification
        /// fills the label column).
        #[arg(long)]
        data: Option<PathBuf>,
        /// With --data: `all` cases, or the run's validation cases (`val`).
        #[arg(long, default_value = "all")]
        cases: String,
        /// Output folder (created; existing files are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Also write colour overlays (the middle slice for volumes).
        #[arg(long)]
        overlay: bool,
        /// Also write class probabilities (segmentation).
        #[arg(long)]
        probabilities: bool,
    },
    /// Tables (mean ± sd over folds), label-efficiency figures, training curves, report.md and a
    /// self-contained report.html from finished pre-training and fine-tuning runs.
    Report {
        /// Run folders (pretrain, finetune seg|cls; a run evaluated with `evaluate --out RUN/test` reports test metrics).
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
    Bench {
        /// `pretrain`, `unet` or `ingest`.
        what: String,
        /// ingest: images to generate and ingest.
        #[arg(long, default_value_t = 200_000)]
        images: usize,
        /// ingest: folder for the generated files and the dataset (new or empty).
        #[arg(long, default_value = "vismae-bench-ingest")]
        dir: PathBuf,
        /// ingest: threads (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// pretrain: data-parallel replicas (CPU workers, or GPUs with --features cuda).
        #[arg(long, default_value_t = 1)]
        devices: usize,
        /// Model size: tiny, small or vis-mae.
        #[arg(long, default_value = "vis-mae")]
        variant: String,
        /// Images per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Timed steps (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
    /// Inspect and convert weight files.
    Weights {
        #[command(subcommand)]
        command: weights_cmd::WeightsCommand,
    },
}

/// How intensities are brought to [0, 1] (`convert`, `ingest`).
#[derive(clap::Args, Debug)]
pub struct IntensityArgs {
    /// Window CENTER,WIDTH or a preset (brain, subdural, lung, mediastinum, abdomen, liver, bone); overrides the header.
    #[arg(long)]
    window: Option<WindowArg>,
    /// Which of the header's windows to use when it lists several (0 = first).
    #[arg(long, default_value_t = 0)]
    window_index: usize,
    /// Normalisation without a usable window: minmax or percentile (0.5-99.5).
    #[arg(long, default_value = "minmax")]
    fallback: Fallback,
}

impl IntensityArgs {
    /// The resolved options.
    pub fn options(&self) -> NormaliseOptions {
        NormaliseOptions {
            window: self.window.map(|w| w.0),
            window_index: self.window_index,
            fallback: self.fallback,
            keep_rgb: false,
        }
    }
}

/// Parses the command line, runs the command, and maps errors to exit status 1 with a message.
pub fn main() -> ExitCode {
    vismae_data::guard::install_panic_hook();
    // batch-parallel inference: one worker per core on the CPU build, the one GPU otherwise
    vismae_train::parallel::set_workers(if cfg!(feature = "cuda") {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    });
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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

fn parse_variant(name: &str) -> anyhow::Result<Variant> {
    Variant::from_name(name).ok_or_else(|| anyhow::anyhow!("unknown variant {name:?}: use tiny, small or vis-mae"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo_cmd::run(args),
        Command::Convert { input, out, intensity, frame, plane, size } => {
            if out.exists() {
                anyhow::bail!("{} already exists: choose another --out (vismae never overwrites)", out.display());
            }
            let opts = ConvertOptions { normalise: intensity.options(), frame, size, plane };
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
        Command::Predict { model, inputs, data, cases, out, overlay, probabilities } => {
            predict(&model, inputs, data, &cases, &out, overlay, probabilities)
        }
        Command::Report { runs, out, title } => {
            let r = vismae_report::build(&runs, &out, &title, &[]).map_err(anyhow::Error::msg)?;
            println!("{} runs, {} tables, {} figures", runs.len(), r.tables.len(), r.figures.len() / 2);
            println!("report: {} (and {})", r.markdown.display(), r.html.display());
            Ok(())
        }
        Command::Split { data, folds, seed, group_by, fractions, out } => {
            if out.exists() {
                anyhow::bail!("{} already exists (vismae never overwrites)", out.display());
            }
            let set = vismae_data::labelled::open(&data)?;
            let by_patient = match group_by.as_str() {
                "patient" => true,
                "case" => false,
                other => anyhow::bail!("--group-by {other:?}: use patient or case"),
            };
            let items: Vec<vismae_data::splits::Item> = set
                .samples
                .iter()
                .map(|s| vismae_data::splits::Item {
                    id: s.id.clone(),
                    group: if by_patient { s.group.clone() } else { s.id.clone() },
                    class: match &s.target {
                        vismae_data::labelled::Target::Class(c) => Some(*c),
                        _ => None,
                    },
                })
                .collect();
            let result =
                vismae_data::splits::grouped_kfold(&items, folds, seed, &fractions).map_err(anyhow::Error::msg)?;
            std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
            let groups: std::collections::HashSet<&String> = items.iter().map(|i| &i.group).collect();
            println!(
                "{} cases in {} groups -> {folds} folds; fractions {:?}; written to {}",
                items.len(),
                groups.len(),
                fractions,
                out.display()
            );
            for (k, f) in result.iter().enumerate() {
                println!("fold {k}: train {} val {}", f.train.len(), f.val.len());
            }
            Ok(())
        }
        Command::Evaluate { command } => evaluate_cmd::run(command),
        Command::Finetune { command } => finetune_cmd::run(command),
        Command::Pretrain(args) => pretrain_cmd::run(args),
        Command::Reconstruct(args) => pretrain_cmd::reconstruct(args),
        Command::Bench { what, variant, batch, size, steps, images, dir, jobs, devices: n_devices } => {
            if what == "ingest" {
                let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
                let r = vismae_data::bench::scale(&dir, images, size, jobs, &|m| eprintln!("{m}"))?;
                println!(
                    "benchmark:      ingest {} generated 64x64 DICOM files at {size}px, {jobs} thread(s)",
                    r.images
                );
                println!("ingest:         {:.0} images/s ({:.1} s)", r.images as f64 / r.ingest_s, r.ingest_s);
                println!(
                    "reader:         {:.0} images/s (one epoch, batch 64, flips, {:.1} s)",
                    r.images as f64 / r.reader_s,
                    r.reader_s
                );
                println!("dataset:        {:.2} GiB of shards", r.dataset_bytes as f64 / (1u64 << 30) as f64);
                let rss: Vec<String> = r.rss_samples.iter().map(|(n, m)| format!("{n}: {m:.0}")).collect();
                println!("RSS (MiB) by files ingested: {}", rss.join(", "));
                println!("peak RSS after ingest: {:.0} MiB", r.ingest_peak_mib);
                let rd: Vec<String> = r.reader_samples.iter().map(|(n, a, f)| format!("{n}: {a:.0}+{f:.0}")).collect();
                println!("reader RSS (MiB, anonymous+file-backed shard pages) by images read: {}", rd.join(", "));
                println!(
                    "peak RSS overall: {:.0} MiB (includes mapped shard pages, which are reclaimable page cache)",
                    r.peak_rss_mib
                );
                return Ok(());
            }
            let variant = parse_variant(&variant)?;
            let r = match what.as_str() {
                "pretrain" => {
                    vismae_train::bench::pretrain::<TrainBackend>(variant, batch, size, steps, &devices(n_devices))
                }
                "unet" => vismae_train::bench::unet_inference::<Backend>(variant, batch, size, steps, &device()),
                other => anyhow::bail!("unknown benchmark {other:?}: use pretrain or unet"),
            }
            .map_err(anyhow::Error::msg)?;
            println!("backend:      {}", std::any::type_name::<Backend>());
            println!("benchmark:    {}", r.what);
            println!("step time:    {:.3} s (median of {steps})", r.median_s);
            println!("throughput:   {:.2} images/s", r.images_per_s);
            if let Some(m) = r.peak_rss_mib {
                println!("peak memory:  {m:.0} MiB (process RSS)");
            }
            Ok(())
        }
        Command::Weights { command } => weights_cmd::run(command),
    }
}

/// `vismae predict`: the inputs (files, or a labelled set's cases) through a fine-tuned run.
fn predict(
    model: &Path,
    inputs: Vec<PathBuf>,
    data: Option<PathBuf>,
    cases: &str,
    out: &Path,
    overlay: bool,
    probabilities: bool,
) -> anyhow::Result<()> {
    use vismae_train::{predict_cls, predict_seg};
    let config = vismae_train::finetune::FinetuneConfig::read(model, None).map_err(anyhow::Error::msg)?;
    let task = config.task.as_str();
    // (name, file, target): named by case id when they come from a labelled set
    let mut items: Vec<(String, PathBuf, Option<vismae_data::labelled::Target>)> =
        inputs.iter().map(|p| (predict_seg::stem(p), p.clone(), None)).collect();
    if let Some(data) = &data {
        let set = vismae_data::labelled::open(data)?;
        let keep: Option<&[String]> = match cases {
            "all" => None,
            "val" => Some(&config.val_cases),
            other => anyhow::bail!("--cases {other:?}: use all or val"),
        };
        for s in set.samples {
            if keep.as_ref().is_none_or(|k| k.contains(&s.id)) {
                let target = (task == "classification").then_some(s.target.clone());
                items.push((s.id, s.images[0].clone(), target));
            }
        }
    }
    if items.is_empty() {
        anyhow::bail!("nothing to predict");
    }
    std::fs::create_dir_all(out)?;
    let started = std::time::Instant::now();
    let pb = indicatif::ProgressBar::new(items.len() as u64);
    if task == "classification" {
        let m = predict_cls::load_run::<Backend>(model, &device()).map_err(anyhow::Error::msg)?;
        let files: Vec<&Path> = items.iter().map(|i| i.1.as_path()).collect();
        let probs = m.predict(&files, &device()).map_err(anyhow::Error::msg)?;
        let rows: Vec<_> = items.into_iter().zip(probs).map(|((id, _, t), p)| (id, t, p)).collect();
        let csv = out.join("predictions.csv");
        predict_cls::write_csv(&csv, m.multi_label, &rows).map_err(anyhow::Error::msg)?;
        println!("{} images classified ({}) -> {}", rows.len(), m.classes.join(", "), csv.display());
    } else {
        let m = predict_seg::load_run::<Backend>(model, &device()).map_err(anyhow::Error::msg)?;
        let opts = predict_seg::PredictOptions { overlay, probabilities };
        for (name, input, _) in &items {
            let files = predict_seg::predict_file(&m, input, Some(name), out, opts, &device())
                .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            pb.println(format!("{} -> {}", input.display(), names.join(", ")));
            pb.inc(1);
        }
        pb.finish_and_clear();
        println!("{} inputs segmented in {:.1} s into {}", items.len(), started.elapsed().as_secs_f64(), out.display());
    }
    Ok(())
}

/// A fine-tuned segmentation run loaded for prediction.
pub(crate) struct SegPredictor(vismae_train::predict_seg::SegModel<Backend>);

impl SegPredictor {
    /// Loads the run's config and best weights.
    pub(crate) fn load(run: &Path) -> anyhow::Result<Self> {
        vismae_train::predict_seg::load_run::<Backend>(run, &device()).map(Self).map_err(anyhow::Error::msg)
    }

    /// Segments `input` into `out`, outputs named after `name`.
    pub(crate) fn predict(&self, input: &Path, name: &str, out: &Path, overlay: bool) -> anyhow::Result<Vec<PathBuf>> {
        let opts = vismae_train::predict_seg::PredictOptions { overlay, probabilities: false };
        vismae_train::predict_seg::predict_file(&self.0, input, Some(name), out, opts, &device())
            .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))
    }
}
