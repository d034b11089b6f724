//! `vismae study STUDY.toml --out DIR`: the paper's evaluation protocol as one resumable command.
//! Every dataset x initialisation x label fraction x fold is a cell; each is a fine-tuning run
//! (the engine of `vismae finetune`) under `DIR/cells/<dataset>/<init>/<fraction>/fold-<k>/`,
//! scored on its fold's held-out test cases, which neither training nor model selection saw.
//! Other tools' predictions on the same folds are scored as cells too. Then [`results`] gathers
//! per-case values into tables, figures and paired statistics against the reference.
//!
//! Running the command again on the same folder continues: finished cells are skipped, an
//! interrupted cell resumes from its checkpoint, a changed study file is refused with its
//! differences listed, unless it only adds datasets, initialisations or fractions (then only the
//! new cells run).
//!
//! On several nodes ([`run_on`]) every cell trains data-parallel on all of them, one cell after
//! another in one group of nodes; rank 0 alone writes the cells, then scores them and writes the
//! report on its own.

mod cells;
pub mod results;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use vismae_data::splits::{Fold, study_folds};
use vismae_run::RunDir;
use vismae_run::study::{StudyFile, slug};
use vismae_train::cluster::{Fingerprints, Group, Topology, settings_hash};
use vismae_train::finetune::Nodes;

pub use cells::{Cell, CellState};

use crate::error::{Result, WorkflowError};

/// What a study run did.
#[derive(Clone, Debug, Default)]
pub struct StudySummary {
    /// Cells in the study.
    pub cells: usize,
    /// Cells finished by this run.
    pub ran: usize,
    /// Cells finished earlier (skipped).
    pub skipped: usize,
    /// Cells that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// The report folder.
    pub report: PathBuf,
    /// The paired comparisons with the reference (as in `stats.csv`).
    pub stats: Vec<results::StatRow>,
    /// Seconds spent.
    pub seconds: f64,
    /// Whether this process scored the cells and wrote the report (a node other than rank 0
    /// of a multi-node study only trains).
    pub reported: bool,
}

/// The folder of a study's splits of `dataset`.
fn splits_path(dir: &Path, dataset: &str) -> PathBuf {
    dir.join("splits").join(format!("{}.json", slug(dataset)))
}

/// Makes the folds of every dataset: `DIR/splits/<dataset>.json` (vismae's, with the inner
/// validation split and the test fold) and `DIR/splits/<dataset>/splits_final.json` (nnU-Net's:
/// train = the other folds, val = the test fold), so other tools can use the same folds. Folds
/// made earlier are kept; fractions added to the study are added to them (the subsets of a
/// fraction do not depend on the other fractions, which is checked).
fn make_splits(study: &StudyFile, dir: &Path) -> Result<()> {
    for d in &study.datasets {
        let path = splits_path(dir, &d.name);
        let old = if path.is_file() { Some(vismae_data::splits::read_splits(&path)?) } else { None };
        let has_all = |folds: &[Fold]| folds.iter().all(|f| study.fractions.iter().all(|&x| f.train_at(x).is_some()));
        if old.as_deref().is_some_and(has_all) {
            continue;
        }
        let set = vismae_data::labelled::open(&d.data)?;
        let items = crate::split::items(&set, study.group_by)?;
        let mut fractions = study.fractions.clone();
        for f in old.iter().flatten().flat_map(Fold::fraction_values) {
            if !fractions.iter().any(|g| (g - f).abs() < 1e-12) {
                fractions.push(f);
            }
        }
        let folds = study_folds(&items, study.folds, study.seed, study.inner_fraction, &fractions)?;
        if let Some(old) = &old {
            let same = old.len() == folds.len()
                && old.iter().zip(&folds).all(|(o, n)| {
                    o.train == n.train
                        && o.val == n.val
                        && o.test == n.test
                        && o.fractions.iter().all(|(k, v)| n.fractions.get(k) == Some(v))
                });
            if !same {
                return Err(WorkflowError::invalid(format!(
                    "{}: the folds of {:?} made now differ from the study's earlier ones (did its labelled set change?); choose another --out",
                    path.display(),
                    d.name
                )));
            }
        }
        std::fs::create_dir_all(path.with_extension("")).map_err(WorkflowError::io(&path))?;
        let text = serde_json::to_string_pretty(&folds).map_err(|e| WorkflowError::invalid(e.to_string()))?;
        vismae_run::run_dir::write_atomic(&path, text.as_bytes())?;
        let nnunet: Vec<serde_json::Value> = folds
            .iter()
            .map(|f| {
                let train: Vec<&String> = f.train.iter().chain(&f.val).collect();
                serde_json::json!({"train": train, "val": f.test})
            })
            .collect();
        let nn = path.with_extension("").join("splits_final.json");
        let text = serde_json::to_string_pretty(&nnunet).map_err(|e| WorkflowError::invalid(e.to_string()))?;
        vismae_run::run_dir::write_atomic(&nn, text.as_bytes())?;
    }
    Ok(())
}

/// The folds of `dataset`.
pub fn folds(dir: &Path, dataset: &str) -> Result<Vec<Fold>> {
    Ok(vismae_data::splits::read_splits(&splits_path(dir, dataset))?)
}

/// The study file `DIR` continues: a new folder takes `file`; an existing one must hold the same
/// study, or one that `file` only extends (then `file` replaces it).
fn open_study(file: &Path, dir: &Path) -> Result<StudyFile> {
    let new = StudyFile::read(file)?;
    let kept = dir.join("study.json");
    if kept.is_file() {
        let old: StudyFile = vismae_run::run_dir::read_json(&kept)?;
        let diff = new.differences_from(&old);
        if !diff.is_empty() {
            return Err(WorkflowError::invalid(format!(
                "{} holds another study; {} differs from it:\n  {}\n(choose another --out, or undo the changes)",
                dir.display(),
                file.display(),
                diff.join("\n  ")
            )));
        }
    } else if dir.exists() && std::fs::read_dir(dir).map_err(WorkflowError::io(dir))?.next().is_some() {
        return Err(vismae_run::RunError::Occupied(dir.into()).into());
    }
    std::fs::create_dir_all(dir).map_err(WorkflowError::io(dir))?;
    let text = serde_json::to_string_pretty(&new).map_err(|e| WorkflowError::invalid(e.to_string()))?;
    vismae_run::run_dir::write_atomic(&kept, text.as_bytes())?;
    Ok(new)
}

/// Runs (or continues) the study of `file` in `dir` on `device`, `jobs` cells at once unless the
/// study file says; `say` gets progress lines. The report is written (again) to `DIR/report/` at
/// the end.
pub fn run<B: AutodiffBackend>(
    file: &Path,
    dir: &Path,
    device: &B::Device,
    jobs: usize,
    say: &(dyn Fn(String) + Sync),
) -> Result<StudySummary> {
    run_on::<B>(file, dir, device, jobs, None, say)
}

/// [`run`] as one node of a multi-node study (`nodes`; `None`: alone). Every node trains every
/// unfinished cell with the others, in the study's order; then rank 0 scores the cells and writes
/// the report, and the other nodes stop. The study folder must be one that every node shares.
pub fn run_on<B: AutodiffBackend>(
    file: &Path,
    dir: &Path,
    device: &B::Device,
    jobs: usize,
    nodes: Option<Topology>,
    say: &(dyn Fn(String) + Sync),
) -> Result<StudySummary> {
    let started = std::time::Instant::now();
    let writes = nodes.as_ref().is_none_or(Topology::writes);
    // rank 0 alone writes the study folder; the nodes compare their study files below
    let study = if writes { open_study(file, dir)? } else { StudyFile::read(file)? };
    if writes {
        make_splits(&study, dir)?;
    }
    let cells = cells::plan(&study, dir)?;
    let mut summary = StudySummary { cells: cells.len(), reported: writes, ..Default::default() };
    let todo: Vec<&Cell> = cells.iter().filter(|c| c.state() != CellState::Scored).collect();
    summary.skipped = cells.len() - todo.len();
    say(format!(
        "{} cells ({} datasets x {} initialisations x {} fractions x {} folds, less what does not apply); {} finished earlier",
        cells.len(),
        study.datasets.len(),
        study.inits.len(),
        study.fractions.len(),
        study.folds,
        summary.skipped
    ));
    if let Some(t) = nodes {
        let trained = train_on_nodes::<B>(t, &study, dir, &cells, device, say)?;
        if !writes {
            summary.ran = trained;
            summary.seconds = started.elapsed().as_secs_f64();
            return Ok(summary);
        }
    }
    let pb = RunDir::bar(todo.len(), 0, "study", "cells");
    let failed = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let jobs = study.jobs.unwrap_or(jobs).clamp(1, todo.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(cell) = todo.get(i) else { break };
                    pb.set_message(cell.label());
                    if let Err(e) = cells::complete::<B>(cell, &study, dir, device) {
                        pb.println(format!("failed: {}: {e}", cell.label()));
                        record_failure(dir, cell, &e);
                        if let Ok(mut f) = failed.lock() {
                            f.push((cell.label(), e.to_string()));
                        }
                    }
                    pb.inc(1);
                }
            });
        }
    });
    pb.finish_and_clear();
    summary.failed = failed.into_inner().unwrap_or_default();
    summary.ran = todo.len() - summary.failed.len();
    say(format!("{} cells ran, {} failed; writing the report", summary.ran, summary.failed.len()));
    (summary.report, summary.stats) = results::write(&study, dir, &cells, &dir.join("report"))?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Trains every cell of `cells` that is not trained yet on all `nodes` (each data-parallel over
/// every node's replicas), one after another; the number trained. Before the first, the nodes
/// check that they run the same study and see its cells equally far (a study folder they share).
/// A failed cell stops the study on every node: run it again to continue.
fn train_on_nodes<B: AutodiffBackend>(
    topology: Topology,
    study: &StudyFile,
    dir: &Path,
    cells: &[Cell],
    device: &B::Device,
    say: &(dyn Fn(String) + Sync),
) -> Result<usize> {
    // read before any node writes: all nodes see the same states
    let states: Vec<CellState> = cells.iter().map(Cell::state).collect();
    let mut shared = study.clone();
    shared.jobs = None;
    for d in &mut shared.datasets {
        // nodes may mount the data elsewhere; each cell's check compares its training examples
        d.data = PathBuf::new();
    }
    let seen: Vec<(String, String)> = cells.iter().zip(&states).map(|(c, s)| (c.label(), format!("{s:?}"))).collect();
    let mine = Fingerprints::study(&settings_hash(&shared)?, &settings_hash(&seen)?);
    let writes = topology.writes();
    say(format!("{}; cells train on all nodes, one after another", topology.describe(1)));
    let group = Arc::new(Group::<B>::start(topology, 1, true, device, &mine)?);
    let todo: Vec<(&Cell, CellState)> = cells
        .iter()
        .zip(states)
        .filter(|(c, s)| c.predictions.is_none() && matches!(s, CellState::New | CellState::Started))
        .collect();
    let pb =
        if writes { RunDir::bar(todo.len(), 0, "study", "cells trained") } else { indicatif::ProgressBar::hidden() };
    for (cell, state) in &todo {
        pb.set_message(cell.label());
        if let Err(e) = cells::train::<B>(cell, *state, study, dir, device, Nodes::Joined(group.clone())) {
            pb.abandon();
            if writes {
                record_failure(dir, cell, &e);
            }
            return Err(WorkflowError::invalid(format!(
                "{}: {e}\nthe study stopped on every node; run the same command again on every node to continue (trained cells are kept, this one resumes)",
                cell.label()
            )));
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if let Ok(g) = Arc::try_unwrap(group) {
        g.finish();
    }
    Ok(todo.len())
}

/// Adds a failed cell and its error to `DIR/failures.jsonl`.
fn record_failure(dir: &Path, cell: &Cell, e: &WorkflowError) {
    let line = serde_json::json!({"cell": cell.label(), "error": e.to_string()});
    let _ = vismae_run::run_dir::append_whole(&dir.join("failures.jsonl"), format!("{line}\n").as_bytes());
}

/// Whether `dir` is a study folder.
pub fn is_study(dir: &Path) -> bool {
    dir.join("study.json").is_file()
}

/// Writes the report of the study in `dir` (as far as its cells are scored) to `out`, a new or
/// empty folder, as `vismae report DIR --out OUT` does.
pub fn report(dir: &Path, out: &Path) -> Result<PathBuf> {
    let study: StudyFile = vismae_run::run_dir::read_json(&dir.join("study.json"))?;
    let cells = cells::plan(&study, dir)?;
    Ok(results::write(&study, dir, &cells, out)?.0)
}
