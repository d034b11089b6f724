//! Reading finished run folders through the typed run-folder schema (`vismae_run`): what kind of
//! run, which initialisation, dataset, fold and label fraction, its headline metrics (from
//! `RUN/test/summary.json` when the run was evaluated on held-out cases, else the best validation
//! epoch) and its per-step or per-epoch curves.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vismae_run::{ClsEvaluation, ClsSummary, RunRecord, SegEvaluation, SegSummary, Task};

use crate::error::ReportError;

/// What a run folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// Self-supervised pre-training.
    Pretraining,
    /// Fine-tuning for a task.
    Finetune(Task),
}

impl RunKind {
    /// `pretraining`, `segmentation` or `classification`.
    pub fn name(self) -> &'static str {
        match self {
            RunKind::Pretraining => "pretraining",
            RunKind::Finetune(Task::Segmentation) => "segmentation",
            RunKind::Finetune(Task::Classification) => "classification",
        }
    }
}

/// A pre-training or fine-tuning run folder.
#[derive(Clone, Debug)]
pub struct Run {
    /// The folder.
    pub path: PathBuf,
    /// What kind of run.
    pub kind: RunKind,
    /// Initialisation: `scratch`, `VIS-MAE-Generic`, `VIS-MAE-<modality>`, or the weights' name.
    pub init: String,
    /// Dataset name (the labelled set's or pre-training set's folder or file name).
    pub dataset: String,
    /// Fold (fine-tuning).
    pub fold: usize,
    /// Fraction of the fold's training cases (fine-tuning; 1 for pre-training).
    pub fraction: f64,
    /// Headline metrics, e.g. `("Dice", 0.81)`.
    pub metrics: Vec<(String, f64)>,
    /// Where the metrics come from: `test` (held-out cases), `validation` or `training`.
    pub source: String,
    /// The lines of `metrics.jsonl`.
    pub curve: Vec<Value>,
    /// Images the run wrote for people (reconstruction grids).
    pub images: Vec<PathBuf>,
}

impl Run {
    /// `pretraining`, `segmentation` or `classification`.
    pub fn task(&self) -> &'static str {
        self.kind.name()
    }
}

fn file_stem(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.trim_end_matches(".json").trim_end_matches(".csv").to_string()
}

fn nan(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// Reads the lines of `RUN/metrics.jsonl` (none when it is missing).
pub fn read_curve(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Reads one run folder.
pub fn read_run(path: &Path) -> Result<Run, ReportError> {
    let curve = read_curve(path);
    match RunRecord::read(path)? {
        RunRecord::Pretrain(cfg) => {
            let mut images: Vec<PathBuf> = std::fs::read_dir(path.join("reconstructions"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "png"))
                .collect();
            images.sort();
            let last = curve.iter().rev().take(10).filter_map(|v| v["loss"].as_f64()).collect::<Vec<_>>();
            let metrics = if last.is_empty() {
                Vec::new()
            } else {
                vec![("MAE loss (last 10 steps)".to_string(), last.iter().sum::<f64>() / last.len() as f64)]
            };
            Ok(Run {
                path: path.into(),
                kind: RunKind::Pretraining,
                init: cfg.name(),
                dataset: file_stem(&cfg.data),
                fold: 0,
                fraction: 1.0,
                metrics,
                source: "training".into(),
                curve,
                images,
            })
        }
        RunRecord::Finetune(cfg) => {
            let test = path.join("test");
            let (metrics, source) = match cfg.task {
                Task::Segmentation => match SegEvaluation::read(&test) {
                    Ok(t) => {
                        let mut m = vec![("Dice".to_string(), nan(t.foreground_mean.dice))];
                        for (name, f) in [
                            ("Precision", (|s: &vismae_run::schema::ClassScoreRecord| s.precision) as fn(&_) -> _),
                            ("Recall", |s| s.recall),
                        ] {
                            if let Some(v) = t.foreground(f) {
                                m.push((name.to_string(), v));
                            }
                        }
                        (m, "test")
                    }
                    Err(_) => {
                        let best = SegSummary::read(path).ok().and_then(|s| s.best_val_dice);
                        (vec![("Dice".to_string(), nan(best))], "validation")
                    }
                },
                Task::Classification => match ClsEvaluation::read(&test) {
                    Ok(t) => (
                        vec![
                            ("ROC AUC".to_string(), nan(t.roc_auc.macro_avg)),
                            ("PR AUC (AP)".to_string(), nan(t.average_precision.macro_avg)),
                        ],
                        "test",
                    ),
                    Err(_) => {
                        let auc = ClsSummary::read(path).ok().and_then(|s| s.val_auc_macro_at_best);
                        (vec![("ROC AUC".to_string(), nan(auc))], "validation")
                    }
                },
            };
            Ok(Run {
                path: path.into(),
                kind: RunKind::Finetune(cfg.task),
                init: cfg.init_name.clone(),
                dataset: file_stem(&cfg.data),
                fold: cfg.fold,
                fraction: cfg.fraction,
                metrics,
                source: source.into(),
                curve,
                images: Vec::new(),
            })
        }
    }
}

/// Mean and sample standard deviation (NaN values left out; sd is NaN below two values).
pub fn mean_sd(values: &[f64]) -> (f64, f64, usize) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, 0);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { f64::NAN };
    (mean, sd, n)
}
