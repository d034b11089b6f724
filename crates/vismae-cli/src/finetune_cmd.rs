//! `vismae finetune seg`: arguments, the fold and label fraction, initial weights, run folder.

use std::path::PathBuf;

use clap::Subcommand;
use vismae_data::labelled::{self, Sample};
use vismae_data::splits::{Item, grouped_kfold};
use vismae_model::weights::{ModelKind, detect, read_state_dict};
use vismae_train::finetune_cls::{self, ClsSettings};
use vismae_train::finetune_seg::{self, SegSettings};
use vismae_train::run_dir::RunDir;

use crate::{TrainBackend, device};

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
    #[arg(long)]
    data: PathBuf,
    /// MAE weights (.safetensors, .pth, .mpk) or `scratch`.
    #[arg(long)]
    init: String,
    /// Run folder (must not hold a run).
    #[arg(long)]
    out: PathBuf,
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

pub fn run(cmd: FinetuneCommand) -> anyhow::Result<()> {
    let (task, a) = match cmd {
        FinetuneCommand::Seg(a) => ("segmentation", a),
        FinetuneCommand::Cls(a) => ("classification", a),
    };
    let settings_json = if task == "segmentation" {
        serde_json::to_value(settings::<SegSettings>(&a.sets)?)?
    } else {
        serde_json::to_value(settings::<ClsSettings>(&a.sets)?)?
    };
    let seed = settings_json["seed"].as_u64().unwrap_or(0);
    let set = labelled::open(&a.data)?;
    let (train_ids, val_ids) = fold_ids(&a.splits, &set.samples, a.folds, a.fold, a.fraction, seed)?;
    let pick = |ids: &[String]| -> Vec<&Sample> { set.samples.iter().filter(|x| ids.contains(&x.id)).collect() };
    let (train, val) = (pick(&train_ids), pick(&val_ids));
    let init_sd = if a.init.eq_ignore_ascii_case("scratch") {
        None
    } else {
        let sd = read_state_dict(std::path::Path::new(&a.init))?;
        let info = detect(&sd).map_err(|e| anyhow::anyhow!("{}: {e}", a.init))?;
        if info.kind != ModelKind::Mae {
            anyhow::bail!("{} holds a {} model; fine-tuning starts from MAE weights (or scratch)", a.init, info.kind);
        }
        Some(sd)
    };
    let run_dir = RunDir::create(&a.out)?;
    let config = serde_json::json!({
        "task": task, "data": a.data, "init": a.init, "fold": a.fold, "fraction": a.fraction,
        "splits": a.splits, "train_cases": train_ids, "val_cases": val_ids, "classes": set.classes, "settings": settings_json,
    });
    run_dir.write_atomic("config.json", serde_json::to_string_pretty(&config)?.as_bytes())?;
    println!(
        "fine-tuning for {task} from {}: fold {}, {:.0} % of its training cases ({} train, {} val cases)",
        a.init,
        a.fold,
        a.fraction * 100.0,
        train.len(),
        val.len()
    );
    if task == "segmentation" {
        let s: SegSettings = serde_json::from_value(settings_json)?;
        let r = finetune_seg::run::<TrainBackend>(&set, &train, &val, init_sd.as_ref(), &s, &run_dir, &device())
            .map_err(anyhow::Error::msg)?;
        if init_sd.is_some() {
            println!("transfer: {} tensors applied (transfer_report.txt)", r.transferred);
        }
        println!(
            "{} classes; best validation foreground Dice {:.4} at epoch {}; best.safetensors and final.safetensors in {}",
            r.classes,
            r.best.0,
            r.best.1,
            a.out.display()
        );
    } else {
        let s: ClsSettings = serde_json::from_value(settings_json)?;
        let r = finetune_cls::run::<TrainBackend>(&set, &train, &val, init_sd.as_ref(), &s, &run_dir, &device())
            .map_err(anyhow::Error::msg)?;
        if init_sd.is_some() {
            println!("transfer: {} tensors applied (transfer_report.txt)", r.transferred);
        }
        println!(
            "best validation loss {:.4} at epoch {} (macro ROC AUC {:.4}); best.safetensors and final.safetensors in {}",
            r.best.0,
            r.best.1,
            r.best_auc,
            a.out.display()
        );
    }
    Ok(())
}
