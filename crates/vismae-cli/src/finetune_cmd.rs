//! `vismae finetune seg|cls`: arguments in, the request resolved (and printed, with warnings)
//! before any work, the engine called, the outcome printed; `--resume RUN` continues a run with
//! everything read back from `RUN/config.json`.

use std::path::PathBuf;

use clap::Subcommand;
use vismae_run::{Init, Task};
use vismae_train::finetune::{self, FinetuneRequest, Outcome, SettingsFrom};

use crate::args::RunFlags;
use crate::{TrainBackend, devices};

#[derive(Subcommand, Debug)]
pub enum FinetuneCommand {
    /// Segmentation: Swin-UNet from MAE weights (--init FILE) or from scratch (--init scratch).
    Seg(FinetuneArgs),
    /// Classification: Swin classifier from the MAE encoder (--init FILE) or from scratch.
    Cls(FinetuneArgs),
}

#[derive(clap::Args, Debug)]
pub struct FinetuneArgs {
    /// Labelled set: nnU-Net folder, datalist .json, .csv, or class folders.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// MAE weights (.safetensors, .pth, .mpk) or `scratch`.
    #[arg(long, required_unless_present = "resume")]
    init: Option<Init>,
    /// The initialisation's name in reports (default: the weights' model card, else derived).
    #[arg(long)]
    name: Option<String>,
    /// Run folder (must not hold a run).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue an interrupted run from its latest checkpoint (its settings come from RUN/config.json).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["data", "init", "splits"])]
    resume: Option<PathBuf>,
    /// splits.json from `vismae split`; without it the split is made here with --folds and --seed.
    #[arg(long)]
    splits: Option<PathBuf>,
    /// Folds when no splits file is given.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Fold to train (its val part validates).
    #[arg(long, default_value_t = 0)]
    fold: usize,
    /// Fraction of the fold's training cases (nested subsets: 0.05, 0.1, 0.25, 0.5, 0.8, 1.0).
    #[arg(long, default_value_t = 1.0)]
    fraction: f64,
    #[command(flatten)]
    run: RunFlags,
    #[command(flatten)]
    nodes: crate::pretrain_cmd::NodeArgs,
}

fn print_outcome(out: &Outcome, dir: &std::path::Path) {
    match out {
        Outcome::Seg(r) => println!(
            "{} classes; best validation foreground Dice {:.4} at epoch {}; best.safetensors and final.safetensors in {}",
            r.classes,
            r.best.0,
            r.best.1,
            dir.display()
        ),
        Outcome::Cls(r) => println!(
            "best validation loss {:.4} at epoch {} (macro ROC AUC {:.4}); best.safetensors and final.safetensors in {}",
            r.best.0,
            r.best.1,
            r.best_auc,
            dir.display()
        ),
    }
}

pub fn run(cmd: FinetuneCommand) -> anyhow::Result<()> {
    let (task, a) = match cmd {
        FinetuneCommand::Seg(a) => (Task::Segmentation, a),
        FinetuneCommand::Cls(a) => (Task::Classification, a),
    };
    let nodes = a.nodes.topology()?;
    let rank = nodes.as_ref().map_or(0, |t| t.rank);
    let (outcome, dir, from_weights) = match &a.resume {
        Some(dir) => {
            if a.run.any() {
                anyhow::bail!("--resume continues a run with the settings it was started with; give no settings");
            }
            println!("fine-tuning for {task}: resuming {}", dir.display());
            let (cfg, run_dir, outcome) =
                finetune::resume_on::<TrainBackend>(dir, Some(task), devices, nodes.into(), false)?;
            (outcome, Some(run_dir.path().to_path_buf()), cfg.init.path().is_some())
        }
        None => {
            let (Some(data), Some(init), Some(out)) = (&a.data, &a.init, &a.out) else {
                anyhow::bail!("--data, --init and --out are needed (or --resume RUN)");
            };
            let req = FinetuneRequest {
                task,
                data: data.clone(),
                init: init.clone(),
                init_name: a.name.clone(),
                splits: a.splits.clone(),
                folds: a.folds,
                fold: a.fold,
                fraction: a.fraction,
                test_cases: Vec::new(),
                settings: SettingsFrom::User(a.run.overrides()),
            };
            let resolved = finetune::resolve(&req)?; // every check before the run folder exists
            if rank == 0 {
                println!("{}", finetune::describe(&resolved.config));
                for w in &resolved.warnings {
                    println!("note: {w}");
                }
            }
            let replicas = devices(resolved.config.devices);
            let (run_dir, outcome) = finetune::start_on::<TrainBackend>(&resolved, out, replicas, nodes.into(), false)?;
            (outcome, run_dir.map(|r| r.path().to_path_buf()), resolved.init.is_some())
        }
    };
    let Some(dir) = dir.filter(|_| rank == 0) else {
        println!("node {rank}: finished; rank 0 validated and wrote the run folder");
        return Ok(());
    };
    print_outcome(&outcome, &dir);
    if from_weights {
        println!("transfer: {} tensors applied (transfer_report.txt)", outcome.transferred());
    }
    if let Some(e) = outcome.resumed_from() {
        println!("resumed after epoch {e}");
    }
    Ok(())
}
