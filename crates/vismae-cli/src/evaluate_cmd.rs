//! `vismae evaluate cls|seg`: arguments in, the workflow's evaluation, its summary printed.

use std::path::PathBuf;

use clap::Subcommand;
use vismae_workflow::evaluate::{self, Truth};

#[derive(Subcommand, Debug)]
pub enum EvaluateCommand {
    /// Classification: FILE.csv with `id,label,prob_0,...` (or `id,labels,...` with `|`-separated indices for multi-label).
    Cls {
        /// Results CSV.
        #[arg(long)]
        results: PathBuf,
        /// Output folder (summary.json, metrics.csv).
        #[arg(long)]
        out: PathBuf,
    },
    /// Segmentation: label maps (PNG pixel value = class, or NIfTI) matched by file name.
    Seg {
        /// Predicted masks.
        #[arg(long)]
        pred: PathBuf,
        /// Ground-truth masks named like the predictions.
        #[arg(long, required_unless_present = "data", conflicts_with = "data")]
        gt: Option<PathBuf>,
        /// Or a labelled set: each prediction CASE.png / CASE.nii.gz is scored against case CASE's mask.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Output folder (summary.json, metrics.csv).
        #[arg(long)]
        out: PathBuf,
        /// Also report the background class 0.
        #[arg(long)]
        include_background: bool,
    },
}

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.6}")).unwrap_or_else(|| "nan".into())
}

pub fn run(cmd: EvaluateCommand) -> anyhow::Result<()> {
    match cmd {
        EvaluateCommand::Cls { results, out } => {
            let s = evaluate::cls(&results, &out)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        EvaluateCommand::Seg { pred, gt, data, out, include_background } => {
            let truth = match (gt, data) {
                (Some(g), _) => Truth::Folder(g),
                (None, Some(d)) => Truth::Labelled(d),
                (None, None) => anyhow::bail!("--gt DIR or --data LABELLED is needed"),
            };
            let s = evaluate::seg(&pred, &truth, &out, include_background)?;
            println!("{} cases, {} classes; foreground mean Dice {}", s.cases, s.classes, fmt(s.foreground_mean.dice));
        }
    }
    Ok(())
}
