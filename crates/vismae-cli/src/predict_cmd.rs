//! `vismae predict`: arguments in, the workflow's prediction with a progress bar, a summary out.

use std::path::PathBuf;

use vismae_train::predict::PredictOptions;
use vismae_workflow::predict::{self, Cases, PredictRequest};

use crate::{Backend, device};

/// Which cases of a labelled set to predict.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CasesArg {
    /// Every case.
    All,
    /// The run's validation cases.
    Val,
    /// The run's held-out test cases.
    Test,
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// Run folder of `vismae finetune seg` or `finetune cls` (config.json, best.safetensors);
    /// given again (`--model RUN1 --model RUN2 ...`) the runs average their probabilities, and
    /// must agree on classes and preprocessing. A study cell (STUDY/cells/DATASET/INIT/FRACTION)
    /// stands for all its fold runs.
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Images, volumes, or folders holding a DICOM series (for runs on several channels:
    /// CASE_0000, CASE_0001, ... files, grouped by case).
    #[arg(required_unless_present = "data")]
    inputs: Vec<PathBuf>,
    /// A labelled set whose cases to predict instead (outputs named by case id; classification
    /// fills the label column).
    #[arg(long)]
    data: Option<PathBuf>,
    /// With --data: all cases, or the run's validation (`val`) or test cases.
    #[arg(long, value_enum, default_value = "all")]
    cases: CasesArg,
    /// Output folder (created; existing files are never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Also write colour overlays (the middle slice for volumes).
    #[arg(long)]
    overlay: bool,
    /// Also write class probabilities (segmentation).
    #[arg(long)]
    probabilities: bool,
    /// Test-time augmentation of segmentation: probabilities averaged over the image's mirrorings,
    /// `lr` (none, left-right), `all` four (none, left-right, up-down, both) or `off`. Default: `lr`
    /// for runs trained with mirroring (augment `reference` or `flip`), else `off`.
    #[arg(long, value_enum)]
    tta: Option<vismae_run::Tta>,
    /// The same as `--tta off` (one pass: what validation and studies score).
    #[arg(long, conflicts_with = "tta")]
    no_tta: bool,
    /// Also write a DICOM SEG (NAME.seg.dcm) per input DICOM series: one binary segment per class,
    /// referencing the series and its SOP instances (segmentation).
    #[arg(long)]
    dicom_seg: bool,
    /// Runs trained on patches (`input = "patch"`): the sliding window's overlap, as a share of
    /// the side (default: the run's, 0.5 as nnU-Net).
    #[arg(long)]
    overlap: Option<f64>,
    /// Runs trained on patches: weigh the windows evenly instead of by a Gaussian.
    #[arg(long)]
    no_gaussian: bool,
}

pub fn run(a: PredictArgs) -> anyhow::Result<()> {
    if let Some(o) = a.overlap
        && !(0.0..1.0).contains(&o)
    {
        anyhow::bail!("--overlap {o} must be at least 0 and below 1");
    }
    let req = PredictRequest {
        models: a.model,
        inputs: a.inputs,
        data: a.data,
        cases: match a.cases {
            CasesArg::All => Cases::All,
            CasesArg::Val => Cases::Val,
            CasesArg::Test => Cases::Test,
        },
        out: a.out,
        options: PredictOptions {
            overlay: a.overlay,
            probabilities: a.probabilities,
            tta: if a.no_tta { Some(vismae_run::Tta::Off) } else { a.tta },
            dicom_seg: a.dicom_seg,
            overlap: a.overlap,
            gaussian: a.no_gaussian.then_some(false),
        },
    };
    let pb = vismae_run::RunDir::bar(0, 0, "predict", "cases");
    let s = predict::predict::<Backend>(&req, &device(), &|done, total, written| {
        pb.set_length(total as u64);
        pb.set_position(done as u64);
        let names: Vec<String> = written.iter().map(|f| f.display().to_string()).collect();
        pb.println(names.join(", "));
    })?;
    pb.finish_and_clear();
    match s.task {
        vismae_run::Task::Classification => println!(
            "{} cases classified ({}) -> {}",
            s.cases,
            s.classes.join(", "),
            s.written.first().map(|p| p.display().to_string()).unwrap_or_default()
        ),
        vismae_run::Task::Segmentation => println!(
            "{} inputs segmented in {:.1} s into {} ({} run{}, {})",
            s.cases,
            s.seconds,
            req.out.display(),
            s.models.len(),
            if s.models.len() == 1 { "" } else { "s averaged" },
            match s.tta {
                Some(vismae_run::Tta::All) => "test-time augmentation: the four mirrorings",
                Some(vismae_run::Tta::Lr) => "test-time augmentation: left-right mirroring",
                _ => "no test-time augmentation",
            }
        ),
    }
    Ok(())
}
