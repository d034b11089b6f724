//! The cells of a study: one per dataset x initialisation x label fraction x fold, each a folder
//! `DIR/cells/<dataset>/<init>/<fraction>/fold-<k>/` that goes through the states
//! new -> started (`config.json`) -> trained (`summary.json`) -> scored (`test/summary.json`).
//! [`complete`] takes a cell from wherever it is to scored: a new cell is resolved and started, a
//! started one resumed from its checkpoint, a trained one predicts its fold's test cases and
//! evaluates them. A cell of another tool's predictions is only scored.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use vismae_run::settings::settings_from_table;
use vismae_run::study::{Selection, StudyDataset, StudyFile, StudyInit, fraction_name, slug};
use vismae_run::{ClsSettings, FinetuneConfig, Init, Keep, SegSettings, Task, TaskSettings};
use vismae_train::finetune::{self, FinetuneRequest, Nodes, SettingsFrom};
use vismae_train::predict::PredictOptions;

use crate::error::{Result, WorkflowError};
use crate::evaluate::{self, Truth};
use crate::predict::{Cases, PredictRequest};

/// One cell of a study.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Index of its dataset in the study file.
    pub dataset: usize,
    /// Index of its initialisation.
    pub init: usize,
    /// Label fraction.
    pub fraction: f64,
    /// Fold.
    pub fold: usize,
    /// Its folder.
    pub dir: PathBuf,
    /// Another tool's predictions, for cells that are only scored.
    pub predictions: Option<PathBuf>,
    /// Names, for labels.
    names: (String, String),
}

/// Where a cell is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellState {
    /// Nothing yet.
    New,
    /// A fine-tuning run began (`config.json`).
    Started,
    /// Its fine-tuning finished (`summary.json`).
    Trained,
    /// Its test cases are scored (`test/summary.json`).
    Scored,
}

impl Cell {
    /// `dataset / init / fraction / fold k`.
    pub fn label(&self) -> String {
        format!("{} / {} / {:.0} % / fold {}", self.names.0, self.names.1, self.fraction * 100.0, self.fold)
    }

    /// Where the cell is.
    pub fn state(&self) -> CellState {
        if self.dir.join("test/summary.json").is_file() {
            CellState::Scored
        } else if self.dir.join("summary.json").is_file() {
            CellState::Trained
        } else if self.dir.join("config.json").is_file() {
            CellState::Started
        } else {
            CellState::New
        }
    }
}

/// Every cell of the study in `dir`, in dataset, init, fraction, fold order. Cells of predictions
/// whose path has no `{fraction}` exist for fraction 1 only.
pub fn plan(study: &StudyFile, dir: &Path) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for (di, d) in study.datasets.iter().enumerate() {
        for (ii, init) in study.inits.iter().enumerate() {
            for &fraction in &study.fractions {
                for fold in 0..study.folds {
                    let predictions = match &init.predictions {
                        Some(t) if !t.contains("{fraction}") && (fraction - 1.0).abs() > 1e-12 => continue,
                        Some(t) => Some(PathBuf::from(
                            t.replace("{k}", &fold.to_string())
                                .replace("{fold}", &fold.to_string())
                                .replace("{fraction}", &fraction_name(fraction)),
                        )),
                        None => None,
                    };
                    let cell_dir = dir
                        .join("cells")
                        .join(slug(&d.name))
                        .join(slug(&init.name))
                        .join(fraction_name(fraction))
                        .join(format!("fold-{fold}"));
                    cells.push(Cell {
                        dataset: di,
                        init: ii,
                        fraction,
                        fold,
                        dir: cell_dir,
                        predictions,
                        names: (d.name.clone(), init.name.clone()),
                    });
                }
            }
        }
    }
    Ok(cells)
}

/// The keys of a settings type.
fn keys_of(v: &impl serde::Serialize) -> Vec<String> {
    serde_json::to_value(v).ok().and_then(|v| v.as_object().map(|o| o.keys().cloned().collect())).unwrap_or_default()
}

/// The fine-tuning settings of a dataset's cells under an initialisation at a fraction: the
/// study's `[finetune]`, the dataset's own over them, the fraction's (`[by_fraction]`) over those,
/// the initialisation's over all (keys only the
/// other task has are left out), the study's seed unless given, and the last epoch's weights kept
/// when the study selects so.
pub fn cell_settings(study: &StudyFile, d: &StudyDataset, init: &StudyInit, fraction: f64) -> Result<TaskSettings> {
    let mut table = study.finetune.clone();
    table.extend(d.finetune.clone());
    for (k, t) in &study.by_fraction {
        if k.parse::<f64>().is_ok_and(|f| (f - fraction).abs() < 1e-9) {
            table.extend(t.clone());
        }
    }
    table.extend(init.finetune.clone());
    let (seg, cls) = (keys_of(&SegSettings::default()), keys_of(&ClsSettings::default()));
    let (mine, other) = match d.task {
        Task::Segmentation => (&seg, &cls),
        Task::Classification => (&cls, &seg),
    };
    table.retain(|k, _| mine.iter().any(|m| m == k) || !other.iter().any(|o| o == k));
    if !table.contains_key("seed") {
        table.insert("seed".into(), toml::Value::Integer(study.seed as i64));
    }
    // the study's selection, unless a dataset or initialisation chooses its own `keep`
    let keep = match (table.contains_key("keep"), study.selection) {
        (true, _) => None,
        (false, Selection::Inner) => Some(Keep::Best),
        (false, Selection::Last) => Some(Keep::Last),
    };
    Ok(match d.task {
        Task::Segmentation => {
            let mut s: SegSettings = settings_from_table(table, None)?;
            s.keep = keep.unwrap_or(s.keep);
            TaskSettings::Segmentation(s)
        }
        Task::Classification => {
            let mut s: ClsSettings = settings_from_table(table, None)?;
            s.keep = keep.unwrap_or(s.keep);
            TaskSettings::Classification(s)
        }
    })
}

/// Removes a folder the study wrote itself and did not finish (predictions or an evaluation of an
/// interrupted attempt), so the attempt can be made again.
fn clear_unfinished(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(WorkflowError::io(path))?;
    }
    Ok(())
}

/// Trains `cell`, which is at `state`, to trained (nothing to do from trained on): a new cell is
/// resolved and started, a started one resumed, alone or with other `nodes`.
pub fn train<B: AutodiffBackend>(
    cell: &Cell,
    state: CellState,
    study: &StudyFile,
    dir: &Path,
    device: &B::Device,
    nodes: Nodes<B>,
) -> Result<()> {
    let d = &study.datasets[cell.dataset];
    let init = &study.inits[cell.init];
    match state {
        CellState::New => {
            let weights = init.weights.clone().unwrap_or_else(|| "scratch".into());
            let req = FinetuneRequest {
                task: d.task,
                data: d.data.clone(),
                init: Init::from(weights),
                init_name: Some(init.name.clone()),
                splits: Some(super::splits_path(dir, &d.name)),
                folds: study.folds,
                fold: cell.fold,
                fraction: cell.fraction,
                test_cases: Vec::new(),
                settings: SettingsFrom::Given(cell_settings(study, d, init, cell.fraction)?),
            };
            let resolved = finetune::resolve(&req)?;
            let devices = vec![device.clone(); resolved.config.devices.max(1)];
            finetune::start_on::<B>(&resolved, &cell.dir, devices, nodes, true)?;
        }
        CellState::Started => {
            finetune::resume_on::<B>(&cell.dir, Some(d.task), |n| vec![device.clone(); n], nodes, true)?;
        }
        CellState::Trained | CellState::Scored => {}
    }
    Ok(())
}

/// Takes `cell` to scored.
pub fn complete<B: AutodiffBackend>(cell: &Cell, study: &StudyFile, dir: &Path, device: &B::Device) -> Result<()> {
    let d = &study.datasets[cell.dataset];
    let test_dir = cell.dir.join("test");
    if let Some(pred) = &cell.predictions {
        return score_predictions(cell, d, pred, dir, &test_dir);
    }
    match cell.state() {
        CellState::Scored => return Ok(()),
        state => train::<B>(cell, state, study, dir, device, Nodes::Alone)?,
    }
    // the fold's test cases, predicted with the kept weights and scored
    let cfg = FinetuneConfig::read(&cell.dir, Some(d.task))?;
    let pred = cell.dir.join("test-predictions");
    clear_unfinished(&pred)?;
    clear_unfinished(&test_dir)?;
    let req = PredictRequest {
        models: vec![cell.dir.clone()],
        inputs: Vec::new(),
        data: Some(d.data.clone()),
        cases: Cases::Test,
        out: pred.clone(),
        // scored as validation scores: one pass
        options: PredictOptions { tta: Some(vismae_run::Tta::Off), ..PredictOptions::default() },
    };
    crate::predict::predict::<B::InnerBackend>(&req, device, &|_, _, _| {})?;
    match d.task {
        Task::Segmentation => {
            evaluate::seg_cases(&pred, &Truth::Labelled(d.data.clone()), Some(&cfg.test_cases), &test_dir, false)?;
        }
        Task::Classification => {
            let csv = pred.join("predictions.csv");
            evaluate::cls(&csv, &test_dir)?;
            let text = std::fs::read(&csv).map_err(WorkflowError::io(&csv))?;
            vismae_run::run_dir::write_atomic(&test_dir.join("predictions.csv"), &text)?;
        }
    }
    if !study.keep_checkpoints {
        clear_unfinished(&cell.dir.join("checkpoints"))?;
    }
    Ok(())
}

/// Scores another tool's predictions of the fold's test cases.
fn score_predictions(cell: &Cell, d: &StudyDataset, pred: &Path, dir: &Path, test_dir: &Path) -> Result<()> {
    if test_dir.join("summary.json").is_file() {
        return Ok(());
    }
    let folds = super::folds(dir, &d.name)?;
    let test = &folds
        .get(cell.fold)
        .ok_or_else(|| WorkflowError::invalid(format!("fold {} is not in the study's splits", cell.fold)))?
        .test;
    if !pred.exists() {
        return Err(WorkflowError::invalid(format!("{}: no such predictions folder", pred.display())));
    }
    clear_unfinished(test_dir)?;
    std::fs::create_dir_all(&cell.dir).map_err(WorkflowError::io(&cell.dir))?;
    let note = serde_json::json!({"predictions": pred, "scored": "the fold's test cases"});
    vismae_run::run_dir::write_atomic(&cell.dir.join("cell.json"), note.to_string().as_bytes())?;
    match d.task {
        Task::Segmentation => {
            evaluate::seg_cases(pred, &Truth::Labelled(d.data.clone()), Some(test), test_dir, false)?;
        }
        Task::Classification => {
            let csv = if pred.is_dir() { pred.join("predictions.csv") } else { pred.to_path_buf() };
            let all = evaluate::read_cls_results(&csv)?;
            let mine = evaluate::only_cases(&all, test);
            if mine.ids.len() != test.len() {
                return Err(WorkflowError::invalid(format!(
                    "{}: {} of the fold's {} test cases are predicted",
                    csv.display(),
                    mine.ids.len(),
                    test.len()
                )));
            }
            evaluate::cls_results(&mine, test_dir)?;
            write_cls_csv(&mine, &test_dir.join("predictions.csv"))?;
        }
    }
    Ok(())
}

/// Writes parsed classification results back in the `evaluate cls` format.
fn write_cls_csv(r: &evaluate::ClsResults, path: &Path) -> Result<()> {
    let classes = r.scores.first().map_or(0, Vec::len);
    let mut text = String::from(if r.multi { "id,labels" } else { "id,label" });
    for k in 0..classes {
        text.push_str(&format!(",prob_{k}"));
    }
    text.push('\n');
    for ((id, t), s) in r.ids.iter().zip(&r.targets).zip(&r.scores) {
        let on: Vec<String> = t.iter().enumerate().filter(|(_, x)| **x).map(|(k, _)| k.to_string()).collect();
        text.push_str(&format!("{id},{}", on.join("|")));
        for p in s {
            text.push_str(&format!(",{p}"));
        }
        text.push('\n');
    }
    vismae_run::run_dir::write_atomic(path, text.as_bytes())?;
    Ok(())
}
