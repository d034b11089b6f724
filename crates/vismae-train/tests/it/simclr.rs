//! SimCLR pre-training (the paper's contrastive baseline) through the same engine as MAE: its loss
//! falls on a small set, two data-parallel replicas give the one-replica losses (the NT-Xent
//! negatives are the whole batch either way), a resumed run ends with the uninterrupted run's
//! weights, and the weights (encoder keys plus `projection.*`, card "SimCLR") start fine-tuning
//! like MAE weights do.

use std::path::{Path, PathBuf};

use vismae_data::dataset::ingest::{IngestOptions, ingest};
use vismae_run::{Method, PretrainConfig, PretrainSettings, Variant};
use vismae_train::pretrain;

use crate::{Train, scratch, seg_csv};

/// 24 images of plaids, each of its own horizontal and vertical frequencies (what a view keeps
/// of its image: crops and flips keep the frequencies), ingested at 32 px; and a labelled set.
fn dataset(dir: &Path) -> PathBuf {
    seg_csv(dir, 8);
    let src = dir.join("plaids");
    std::fs::create_dir_all(&src).unwrap_or_default();
    let s = 48usize;
    for i in 0..24 {
        let (fx, fy) = (1 + i % 6, 1 + i / 6);
        let px: Vec<u8> = (0..s * s)
            .map(|p| {
                let (x, y) = ((p % s) as f64, (p / s) as f64);
                let t = std::f64::consts::TAU;
                (255.0
                    * (0.5 + 0.25 * (t * fx as f64 * x / s as f64).sin() + 0.25 * (t * fy as f64 * y / s as f64).sin()))
                    as u8
            })
            .collect();
        image::GrayImage::from_raw(s as u32, s as u32, px)
            .unwrap_or_else(|| panic!("size"))
            .save(src.join(format!("{i:02}.png")))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let opts = IngestOptions { size: 32, jobs: 1, ..IngestOptions::default() };
    ingest(&[src], &dir.join("ds"), &opts, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    dir.join("ds")
}

fn settings(steps: usize) -> PretrainSettings {
    PretrainSettings {
        method: Method::Simclr,
        variant: Variant::Tiny,
        steps: Some(steps),
        batch_size: 8,
        lr: 1e-3,
        warmup_epochs: Some(0.5),
        // large crops: a tiny network on 32-px images learns to match those within a test's steps
        crop_min: 0.8,
        checkpoint_every: 1,
        keep_checkpoints: 100,
        ..PretrainSettings::default()
    }
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

fn run(cfg: &PretrainConfig, out: &Path, replicas: usize) -> PathBuf {
    let _serial = crate::serial();
    let devices = vec![Default::default(); replicas];
    pretrain::start::<Train>(cfg, out, &devices, true).unwrap_or_else(|e| panic!("{e}"));
    out.into()
}

#[test]
fn simclr_loss_falls_and_two_replicas_give_the_one_replica_losses() {
    let dir = scratch("simclr-fall");
    let data = dataset(&dir);
    let cfg = pretrain::resolve(&settings(50), &data, 1).unwrap_or_else(|e| panic!("{e}"));
    let l = losses(&run(&cfg, &dir.join("one"), 1));
    assert_eq!(l.len(), 50);
    let (first, last) = (l[..10].iter().sum::<f64>() / 10.0, l[40..].iter().sum::<f64>() / 10.0);
    assert!(last < first - 0.1, "the NT-Xent loss falls: {first:.4} -> {last:.4} ({l:?})");
    let short = pretrain::resolve(&settings(3), &data, 1).unwrap_or_else(|e| panic!("{e}"));
    let one = losses(&run(&short, &dir.join("a1"), 1));
    let two = losses(&run(&short, &dir.join("a2"), 2));
    for (a, b) in one.iter().zip(&two) {
        assert!(((a - b) / a).abs() < 1e-5, "one replica {a}, two {b}");
    }
    // the weights: the encoder under the classifier's keys, the head under projection.*
    let sd =
        vismae_model::weights::read_state_dict(&dir.join("a1/weights.safetensors")).unwrap_or_else(|e| panic!("{e}"));
    assert!(sd.tensors.contains_key("norm.weight") && sd.tensors.contains_key("projection.1.weight"));
    assert!(!sd.tensors.contains_key("decoder_pred.weight"));
    assert_eq!(sd.card().map(|c| c.name), Some("SimCLR".into()));
}

#[test]
fn simclr_resumed_ends_with_the_uninterrupted_weights_and_fine_tunes() {
    let dir = scratch("simclr-resume");
    let data = dataset(&dir);
    let cfg = pretrain::resolve(&settings(5), &data, 1).unwrap_or_else(|e| panic!("{e}"));
    let whole = run(&cfg, &dir.join("whole"), 1);
    let cut = run(&cfg, &dir.join("cut"), 1);
    // as if killed after step 3: later checkpoints, log lines and weights gone
    for k in [4, 5] {
        std::fs::remove_dir_all(cut.join(format!("checkpoints/step-{k:08}"))).unwrap_or_else(|e| panic!("{e}"));
    }
    for f in ["weights.safetensors", "weights.mpk", "weights.json"] {
        let _ = std::fs::remove_file(cut.join(f));
    }
    let (_, _, out) =
        pretrain::resume::<Train>(&cut, |n| vec![Default::default(); n], true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.resumed_from, Some(3));
    assert_eq!(losses(&cut), losses(&whole));
    let read = |p: PathBuf| std::fs::read(p).unwrap_or_default();
    assert_eq!(read(cut.join("weights.safetensors")), read(whole.join("weights.safetensors")));
    // fine-tuning a classifier from the SimCLR encoder: encoder and norm applied, head new
    let req = vismae_train::finetune::FinetuneRequest {
        task: vismae_run::Task::Segmentation,
        data: dir.join("set.csv"),
        init: vismae_run::Init::Weights(whole.join("weights.safetensors")),
        init_name: None,
        splits: None,
        folds: 4,
        fold: 0,
        fraction: 1.0,
        test_cases: Vec::new(),
        settings: vismae_train::finetune::SettingsFrom::Given(vismae_run::TaskSettings::Segmentation(
            vismae_run::SegSettings {
                variant: Variant::Tiny,
                size: 32,
                epochs: 1,
                warmup_epochs: Some(0.5),
                ..Default::default()
            },
        )),
    };
    let r = vismae_train::finetune::resolve(&req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.config.init_name, "SimCLR");
    assert!(r.warnings.iter().any(|w| w.contains("no decoder")), "{:?}", r.warnings);
    vismae_train::finetune::start::<Train>(&r, &dir.join("ft"), &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let report = std::fs::read_to_string(dir.join("ft/transfer_report.txt")).unwrap_or_default();
    assert!(report.contains("projection.*: not loaded") && report.contains("norm.*: not loaded"), "{report}");
    let left = report.split("left at initialisation:").nth(1).unwrap_or_default();
    assert!(left.contains("layers_up.") && !left.contains("layers.0.blocks.0.attn.qkv.weight"), "{report}");
}
