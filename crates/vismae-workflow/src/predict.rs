//! `vismae predict`: a fine-tuned run over image files, volumes and DICOM series folders, or over
//! the cases of a labelled set (all, or the run's validation cases), each case prepared as the
//! run was trained. Segmentation writes masks (and overlays, probabilities) per case;
//! classification writes `predictions.csv` in the `evaluate cls` format. Several runs (a fold
//! ensemble) average their probabilities; they must agree on the task, classes and preprocessing.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use vismae_data::labelled::Target;
use vismae_run::{FinetuneConfig, Task};
use vismae_train::infer::{ClsNet, SegNet};
use vismae_train::predict::{PredictOptions, classify, group_inputs, write_predictions_csv};

use crate::error::{Result, WorkflowError};

/// Which cases of a labelled set to predict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cases {
    /// Every case.
    #[default]
    All,
    /// The run's validation cases.
    Val,
    /// The run's held-out test cases.
    Test,
}

/// What to predict.
#[derive(Clone, Debug)]
pub struct PredictRequest {
    /// The fine-tuning run, or several (a fold ensemble: probabilities averaged).
    pub models: Vec<PathBuf>,
    /// Files, volumes or series folders (grouped into cases by nnU-Net channel names when the
    /// run takes several files per case).
    pub inputs: Vec<PathBuf>,
    /// A labelled set whose cases to predict as well (outputs named by case id).
    pub data: Option<PathBuf>,
    /// Which of its cases.
    pub cases: Cases,
    /// Output folder (created; existing files are never overwritten).
    pub out: PathBuf,
    /// Overlays and probabilities.
    pub options: PredictOptions,
}

/// What `predict` did.
#[derive(Clone, Debug)]
pub struct PredictSummary {
    /// The run's task.
    pub task: Task,
    /// Cases predicted.
    pub cases: usize,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Class names.
    pub classes: Vec<String>,
    /// The test-time augmentation segmentation used.
    pub tta: Option<vismae_run::Tta>,
    /// Seconds spent.
    pub seconds: f64,
    /// The runs that predicted (a study cell's folds expanded).
    pub models: Vec<PathBuf>,
}

/// The run folders `models` name: a run folder (with `config.json`) as it is; a folder of runs
/// (a study cell `cells/DATASET/INIT/FRACTION`, holding `fold-K` runs) as each of its runs, in
/// name order.
pub fn expand_models(models: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for m in models {
        if m.join("config.json").is_file() {
            out.push(m.clone());
            continue;
        }
        let mut runs: Vec<PathBuf> = std::fs::read_dir(m)
            .map_err(WorkflowError::io(m))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("config.json").is_file() && p.join("best.safetensors").is_file())
            .collect();
        if runs.is_empty() {
            return Err(WorkflowError::invalid(format!(
                "{}: neither a run folder (config.json) nor a folder of finished runs (a study cell DATASET/INIT/FRACTION with its fold-K runs)",
                m.display()
            )));
        }
        runs.sort();
        out.extend(runs);
    }
    Ok(out)
}

/// The cases to predict: `(name, files, target when known)`.
type Item = (String, Vec<PathBuf>, Option<Target>);

fn items(req: &PredictRequest, cfg: &FinetuneConfig) -> Result<Vec<Item>> {
    let channels = if cfg.preprocess.channels == vismae_run::Channels::Stack { cfg.preprocess.in_chans } else { 1 };
    let mut items: Vec<Item> =
        group_inputs(&req.inputs, channels)?.into_iter().map(|(name, files)| (name, files, None)).collect();
    if let Some(data) = &req.data {
        let set = vismae_data::labelled::open(data)?;
        let keep: Option<&[String]> = match req.cases {
            Cases::All => None,
            Cases::Val => Some(&cfg.val_cases),
            Cases::Test => Some(&cfg.test_cases),
        };
        for s in set.samples {
            if keep.is_none_or(|k| k.contains(&s.id)) {
                let target = (cfg.task == Task::Classification).then_some(s.target.clone());
                items.push((s.id, s.images, target));
            }
        }
    }
    if items.is_empty() {
        return Err(WorkflowError::invalid("nothing to predict: give input files or --data"));
    }
    Ok(items)
}

/// Runs `req` on `device`, calling `progress(done, total, written)` as cases are written.
pub fn predict<B: Backend>(
    req: &PredictRequest,
    device: &B::Device,
    progress: &dyn Fn(usize, usize, &[PathBuf]),
) -> Result<PredictSummary> {
    let started = std::time::Instant::now();
    let expanded = PredictRequest { models: expand_models(&req.models)?, ..req.clone() };
    let req = &expanded;
    let first = req.models.first().ok_or_else(|| WorkflowError::invalid("predict needs at least one --model run"))?;
    let cfg = FinetuneConfig::read(first, None)?;
    for other in &req.models[1..] {
        let other_cfg = FinetuneConfig::read(other, None)?;
        let task = other_cfg.task;
        if req.cases == Cases::Test && req.data.is_some() && other_cfg.test_cases != cfg.test_cases {
            return Err(WorkflowError::invalid(format!(
                "--cases test: {} and {} hold out different test cases (the fold runs of a study do), so the ensemble would score cases some of its runs trained on",
                other.display(),
                first.display()
            )));
        }
        if task != cfg.task {
            return Err(WorkflowError::invalid(format!(
                "{} is a {task:?} run, {} a {:?} run: an ensemble takes runs of one task",
                other.display(),
                first.display(),
                cfg.task
            )));
        }
    }
    if req.models.len() > 1 && req.cases == Cases::Val {
        return Err(WorkflowError::invalid(
            "--cases val with several runs: each fold run has its own validation cases; predict them run by run, or use --cases test",
        ));
    }
    if req.options.dicom_seg && cfg.task == Task::Classification {
        return Err(WorkflowError::invalid("--dicom-seg writes segmentations; this is a classification run"));
    }
    let items = items(req, &cfg)?;
    std::fs::create_dir_all(&req.out).map_err(WorkflowError::io(&req.out))?;
    let mut written = Vec::new();
    let (classes, tta) = match cfg.task {
        Task::Classification => {
            let nets = req.models.iter().map(|m| ClsNet::<B>::load(m, device)).collect::<Result<Vec<_>, _>>()?;
            ClsNet::check_ensemble(&nets, &req.models)?;
            let net = &nets[0];
            let files: Vec<Vec<PathBuf>> = items.iter().map(|i| i.1.clone()).collect();
            let probs = classify(&nets, &files, device)?;
            let rows: Vec<_> = items.iter().zip(probs).map(|((id, _, t), p)| (id.clone(), t.clone(), p)).collect();
            let csv = req.out.join("predictions.csv");
            write_predictions_csv(&csv, net.multi_label, &rows)?;
            progress(items.len(), items.len(), std::slice::from_ref(&csv));
            written.push(csv);
            (net.classes.clone(), None)
        }
        Task::Segmentation => {
            let nets = req.models.iter().map(|m| SegNet::<B>::load(m, device)).collect::<Result<Vec<_>, _>>()?;
            SegNet::check_ensemble(&nets, &req.models)?;
            let cases: Vec<(String, Vec<PathBuf>)> = items.iter().map(|i| (i.0.clone(), i.1.clone())).collect();
            let mut done = 0;
            let total = cases.len();
            written =
                vismae_train::predict::segment_cases(&nets, &cases, &req.out, req.options, device, &mut |_, w| {
                    done += 1;
                    progress(done.min(total), total, w);
                })?;
            let names = (0..nets[0].classes).map(|c| cfg.classes.get(c).cloned().unwrap_or_else(|| c.to_string()));
            (names.collect(), Some(req.options.tta.unwrap_or_else(|| nets[0].default_tta())))
        }
    };
    Ok(PredictSummary {
        task: cfg.task,
        cases: items.len(),
        written,
        classes,
        tta,
        seconds: started.elapsed().as_secs_f64(),
        models: req.models.clone(),
    })
}

/// Predictions of a segmentation run for `cases` of its labelled set, named by case id, into `out`.
pub fn segment_cases<B: Backend>(
    run: &Path,
    cases: &[(String, Vec<PathBuf>)],
    out: &Path,
    options: PredictOptions,
    device: &B::Device,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(WorkflowError::io(out))?;
    let net = SegNet::<B>::load(run, device)?;
    Ok(vismae_train::predict::segment_cases(std::slice::from_ref(&net), cases, out, options, device, &mut |_, _| {})?)
}
