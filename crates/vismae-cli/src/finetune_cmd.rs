//! `vismae finetune seg|cls`: arguments, the fold and label fraction, initial weights, the run
//! folder, and `--resume RUN` (everything read back from `RUN/config.json`).

use std::path::PathBuf;

use clap::Subcommand;
use vismae_data::labelled::{self, Sample};
use vismae_data::splits::{Item, grouped_kfold};
use vismae_model::weights::{ModelKind, detect, read_state_dict};
use vismae_train::finetune::FinetuneConfig;
use vismae_train::finetune_cls::{self, ClsSettings};
use vismae_train::finetune_seg::{self, SegSettings};
use vismae_train::run_dir::RunDir;

use crate::{TrainBackend, absolute, device};

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
    init: Option<String>,
    /// Run folder (must not hold a run).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue an interrupted run from its latest checkpoint (its settings come from RUN/config.json).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["data", "init", "splits", "sets"])]
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
    /// Settings as key=value (see config.json), e.g. --set epochs=150 --set size=320.
    #[arg(long = "set")]
    sets: Vec<String>,
}

fn settings<T: serde::de::DeserializeOwned>(sets: &[String]) -> anyhow::Result<T> {
    let mut table = toml::Table::new();
    vismae_train::pretrain_config::apply_sets(&mut table, sets).map_err(anyhow::Error::msg)?;
    toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("invalid settings: {e}"))
}

fn fold_ids(
    splits: &Option<PathBuf>,
    samples: &[Sample],
    folds: usize,
    fold: usize,
    fraction: f64,
    seed: u64,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let all: Vec<vismae_data::splits::Fold> = match splits {
        Some(p) => {
            serde_json::from_str(&std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
                .map_err(|e| anyhow::anyhow!("{}: not a vismae splits file: {e}", p.display()))?
        }
        None => {
            let items: Vec<Item> =
                samples.iter().map(|s| Item { id: s.id.clone(), group: s.group.clone(), class: None }).collect();
            grouped_kfold(&items, folds, seed, &[fraction]).map_err(anyhow::Error::msg)?
        }
    };
    let f = all.get(fold).ok_or_else(|| anyhow::anyhow!("fold {fold} does not exist ({} folds)", all.len()))?;
    let train = f
        .fractions
        .iter()
        .find(|(k, _)| k.parse::<f64>().is_ok_and(|v| (v - fraction).abs() < 1e-9))
        .map(|(_, v)| v.clone())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "fraction {fraction} is not in the splits (have {:?})",
                f.fractions.keys().collect::<Vec<_>>()
            )
        })?;
    Ok((train, f.val.clone()))
}

fn read_init(init: &str) -> anyhow::Result<Option<vismae_model::weights::StateDict>> {
    if init.eq_ignore_ascii_case("scratch") {
        return Ok(None);
    }
    let sd = read_state_dict(std::path::Path::new(init))?;
    let info = detect(&sd).map_err(|e| anyhow::anyhow!("{init}: {e}"))?;
    if info.kind != ModelKind::Mae {
        anyhow::bail!("{init} holds a {} model; fine-tuning starts from MAE weights (or scratch)", info.kind);
    }
    Ok(Some(sd))
}

pub fn run(cmd: FinetuneCommand) -> anyhow::Result<()> {
    let (task, a) = match cmd {
        FinetuneCommand::Seg(a) => ("segmentation", a),
        FinetuneCommand::Cls(a) => ("classification", a),
    };
    let (config, run_dir, resume, set, init_sd) = match &a.resume {
        Some(dir) => {
            let run_dir = RunDir::open_existing(dir)?;
            let config = FinetuneConfig::read(dir, Some(task)).map_err(anyhow::Error::msg)?;
            let set = labelled::open(&config.data)?;
            let init_sd = read_init(&config.init)?;
            (config, run_dir, true, set, init_sd)
        }
        None => {
            let settings_json = if task == "segmentation" {
                serde_json::to_value(settings::<SegSettings>(&a.sets)?)?
            } else {
                serde_json::to_value(settings::<ClsSettings>(&a.sets)?)?
            };
            let seed = settings_json["seed"].as_u64().unwrap_or(0);
            let (data, init, out) = match (&a.data, &a.init, &a.out) {
                (Some(d), Some(i), Some(o)) => (d, i, o),
                _ => anyhow::bail!("--data, --init and --out are needed (or --resume RUN)"),
            };
            let set = labelled::open(data)?;
            let (train_cases, val_cases) = fold_ids(&a.splits, &set.samples, a.folds, a.fold, a.fraction, seed)?;
            let init_sd = read_init(init)?; // fails before the run folder exists
            let run_dir = RunDir::create(out)?;
            let config = FinetuneConfig {
                task: task.into(),
                data: absolute(data),
                init: if init_sd.is_none() { init.clone() } else { absolute(init.as_ref()).display().to_string() },
                fold: a.fold,
                fraction: a.fraction,
                splits: a.splits.clone(),
                train_cases,
                val_cases,
                test_cases: Vec::new(),
                classes: set.classes.clone(),
                settings: settings_json,
            };
            run_dir.write_json("config.json", &config)?;
            (config, run_dir, false, set, init_sd)
        }
    };
    let init = &config.init;
    let pick = |ids: &[String]| -> Vec<&Sample> { set.samples.iter().filter(|x| ids.contains(&x.id)).collect() };
    let (train, val) = (pick(&config.train_cases), pick(&config.val_cases));
    let out = run_dir.path().to_path_buf();
    println!(
        "fine-tuning for {task} from {init}: fold {}, {:.0} % of its training cases ({} train, {} val cases){}",
        config.fold,
        config.fraction * 100.0,
        train.len(),
        val.len(),
        if resume { ", resuming" } else { "" }
    );
    let settings_json = config.settings.clone();
    let (resumed, transferred) = if task == "segmentation" {
        let s: SegSettings = serde_json::from_value(settings_json)?;
        let r =
            finetune_seg::run::<TrainBackend>(&set, &train, &val, init_sd.as_ref(), &s, &run_dir, resume, &device())
                .map_err(anyhow::Error::msg)?;
        println!(
            "{} classes; best validation foreground Dice {:.4} at epoch {}; best.safetensors and final.safetensors in {}",
            r.classes,
            r.best.0,
            r.best.1,
            out.display()
        );
        (r.resumed_from, r.transferred)
    } else {
        let s: ClsSettings = serde_json::from_value(settings_json)?;
        let r =
            finetune_cls::run::<TrainBackend>(&set, &train, &val, init_sd.as_ref(), &s, &run_dir, resume, &device())
                .map_err(anyhow::Error::msg)?;
        println!(
            "best validation loss {:.4} at epoch {} (macro ROC AUC {:.4}); best.safetensors and final.safetensors in {}",
            r.best.0,
            r.best.1,
            r.best_auc,
            out.display()
        );
        (r.resumed_from, r.transferred)
    };
    if init_sd.is_some() {
        println!("transfer: {transferred} tensors applied (transfer_report.txt)");
    }
    if let Some(e) = resumed {
        println!("resumed after epoch {e}");
    }
    Ok(())
}
