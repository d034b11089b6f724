//! The best epoch's validation score that `finetune` logs equals what `predict --data SET --cases
//! val` with that run's weights, scored by `evaluate`, gives (to 1e-4): same preprocessing, same
//! batching, same metric. Shown for segmentation on 2-D images of another size than the network's
//! (resized, and by the sliding window of a patch-trained run),
//! for classification, and for a 2-channel nnU-Net set of volumes started from 3-channel MAE
//! weights (its patch embedding adapted).

use std::path::{Path, PathBuf};

use vismae_model::weights::{export_state_dict, safetensors_io};
use vismae_model::{Variant, VariantExt};
use vismae_run::{Augment, ClsSettings, FinetuneConfig, Init, SegSettings, Task, TaskSettings};
use vismae_train::finetune::{self, FinetuneRequest, SettingsFrom};
use vismae_train::predict::PredictOptions;
use vismae_workflow::evaluate::{self, Truth};
use vismae_workflow::predict::{Cases, PredictRequest, predict};

use crate::{Infer, Train, cropped, png, scratch};

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The metric logged at the best epoch (the one `summary.json` names).
fn logged_at_best(run: &Path, best_epoch: usize, key: &str) -> f64 {
    let lines = jsonl(&run.join("metrics.jsonl"));
    let line = lines
        .iter()
        .find(|v| v["epoch"].as_u64() == Some(best_epoch as u64))
        .unwrap_or_else(|| panic!("epoch {best_epoch}"));
    line[key].as_f64().unwrap_or(f64::NAN)
}

fn request(task: Task, data: &Path, init: Init, settings: TaskSettings) -> FinetuneRequest {
    FinetuneRequest {
        task,
        data: data.into(),
        init,
        init_name: None,
        splits: None,
        folds: 4,
        fold: 1,
        fraction: 1.0,
        test_cases: Vec::new(),
        settings: SettingsFrom::Given(settings),
    }
}

fn predict_val(run: &Path, data: &Path, out: &Path) {
    let req = PredictRequest {
        models: vec![run.into()],
        inputs: Vec::new(),
        data: Some(data.into()),
        cases: Cases::Val,
        out: out.into(),
        options: PredictOptions { tta: Some(vismae_run::Tta::Off), ..PredictOptions::default() },
    };
    predict::<Infer>(&req, &Default::default(), &|_, _, _| {}).unwrap_or_else(|e| panic!("{e}"));
}

fn tiny_seg(batch: usize) -> SegSettings {
    SegSettings {
        variant: Variant::Tiny,
        size: 32,
        epochs: 3,
        warmup_epochs: Some(1.0),
        batch_size: batch,
        augment: Augment::Flip,
        checkpoint_every: 3,
        ..SegSettings::default()
    }
}

#[test]
fn segmentation_validation_equals_predict_then_evaluate() {
    vismae_train::parallel::set_workers(2);
    let dir = scratch("seg2d");
    std::fs::create_dir_all(dir.join("img")).unwrap_or_default();
    let mut csv = String::from("image,mask\n");
    // 20 cases of 44 x 38 pixels: the network sees them at 32 x 32
    for i in 0..20u64 {
        let (img, lab) = cropped(21, i, 48, 44, 38);
        png(&dir.join(format!("img/c{i:02}.png")), 44, 38, &img);
        png(&dir.join(format!("img/c{i:02}_mask.png")), 44, 38, &lab);
        csv.push_str(&format!("img/c{i:02}.png,img/c{i:02}_mask.png\n"));
    }
    std::fs::write(dir.join("set.csv"), csv).unwrap_or_default();
    let data = dir.join("set.csv");
    // batch 3: validation chunks run across case boundaries; patch mode: 2 x 2 sliding windows
    for input in [vismae_run::SegInput::Resize, vismae_run::SegInput::Patch] {
        let settings = SegSettings { input, ..tiny_seg(3) };
        let req = request(Task::Segmentation, &data, Init::Scratch, TaskSettings::Segmentation(settings));
        let resolved = finetune::resolve(&req).unwrap_or_else(|e| panic!("{e}"));
        let run = dir.join(format!("run-{input}"));
        let (_, out) = finetune::start::<Train>(&resolved, &run, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let finetune::Outcome::Seg(o) = out else { panic!("a segmentation run") };
        let logged = logged_at_best(&run, o.best.1, "val_dice");
        assert!((logged - o.best.0).abs() < 1e-12);
        let pred = dir.join(format!("pred-{input}"));
        predict_val(&run, &data, &pred);
        let e = evaluate::seg(&pred, &Truth::Labelled(data.clone()), &dir.join(format!("eval-{input}")), false)
            .unwrap_or_else(|e| panic!("{e}"));
        let cfg = FinetuneConfig::read(&run, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.cases, cfg.val_cases.len());
        let evaluated = e.foreground_mean.dice.unwrap_or(f64::NAN);
        assert!(
            (evaluated - logged).abs() < 1e-4,
            "{input}: logged best validation Dice {logged}, evaluate seg {evaluated}"
        );
        // the masks are the cases' own size
        let m = image::open(pred.join(format!("{}.png", cfg.val_cases[0]))).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m.width(), m.height()), (44, 38));
    }
}

#[test]
fn classification_validation_equals_predict_then_evaluate() {
    vismae_train::parallel::set_workers(2);
    let dir = scratch("cls");
    for c in ["clean", "lesion"] {
        std::fs::create_dir_all(dir.join("set").join(c)).unwrap_or_default();
    }
    let (mut n, mut i) = ([0usize; 2], 0u64);
    while n[0] < 10 || n[1] < 10 {
        let (img, lab) = cropped(31, i, 40, 40, 40);
        i += 1;
        let class = usize::from(lab.contains(&2));
        if n[class] >= 10 {
            continue;
        }
        n[class] += 1;
        png(&dir.join(format!("set/{}/{i}.png", ["clean", "lesion"][class])), 40, 40, &img);
    }
    let data = dir.join("set");
    let s = ClsSettings {
        variant: Variant::Tiny,
        size: 32,
        epochs: 3,
        warmup_epochs: Some(1.0),
        batch_size: 3,
        checkpoint_every: 3,
        ..ClsSettings::default()
    };
    let req = request(Task::Classification, &data, Init::Scratch, TaskSettings::Classification(s));
    let resolved = finetune::resolve(&req).unwrap_or_else(|e| panic!("{e}"));
    let run = dir.join("run");
    let (_, out) = finetune::start::<Train>(&resolved, &run, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let finetune::Outcome::Cls(o) = out else { panic!("a classification run") };
    let logged = logged_at_best(&run, o.best.1, "val_auc_macro");
    predict_val(&run, &data, &dir.join("pred"));
    let e = evaluate::cls(&dir.join("pred/predictions.csv"), &dir.join("eval")).unwrap_or_else(|e| panic!("{e}"));
    let evaluated = e.roc_auc.macro_avg.unwrap_or(f64::NAN);
    assert!((evaluated - logged).abs() < 1e-4, "logged best validation ROC AUC {logged}, evaluate cls {evaluated}");
}

/// Tiny 3-channel MAE weights (freshly initialised, as a stand-in for pre-trained ones).
pub fn mae_weights(path: &Path) -> PathBuf {
    let device = Default::default();
    let model = Variant::Tiny.mae(3).init::<Infer>(&device);
    let (_, sd) = export_state_dict::<Infer, _>(model);
    safetensors_io::write(&sd, path).unwrap_or_else(|e| panic!("{e}"));
    path.into()
}

#[test]
fn two_channel_nnunet_volumes_fine_tune_predict_and_agree() {
    use vismae_data::volume::{Volume, write_nifti};
    vismae_train::parallel::set_workers(2);
    let dir = scratch("nnunet2");
    let root = dir.join("Dataset002_Two");
    for d in ["imagesTr", "labelsTr"] {
        std::fs::create_dir_all(root.join(d)).unwrap_or_default();
    }
    std::fs::write(
        root.join("dataset.json"),
        r#"{"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "organ": 1, "lesion": 2}, "numTraining": 8, "file_ending": ".nii.gz"}"#,
    )
    .unwrap_or_default();
    let (nx, ny, nz) = (36, 40, 4);
    for case in 0..8u64 {
        let (mut t1, mut t2, mut lab) = (Vec::new(), Vec::new(), Vec::new());
        for z in 0..nz as u64 {
            let (img, l) = cropped(41, case * 10 + z, 40, nx, ny);
            t1.extend(img.iter().map(|&v| f32::from(v)));
            t2.extend(img.iter().map(|&v| 255.0 - f32::from(v)));
            lab.extend(l.iter().map(|&v| f32::from(v)));
        }
        let vol = |data: Vec<f32>| Volume { dims: [nx, ny, nz, 1], spacing: [0.9, 0.8, 3.0], data };
        let id = format!("case_{case:03}");
        write_nifti(&root.join(format!("imagesTr/{id}_0000.nii.gz")), &vol(t1), false)
            .unwrap_or_else(|e| panic!("{e}"));
        write_nifti(&root.join(format!("imagesTr/{id}_0001.nii.gz")), &vol(t2), false)
            .unwrap_or_else(|e| panic!("{e}"));
        write_nifti(&root.join(format!("labelsTr/{id}.nii.gz")), &vol(lab), true).unwrap_or_else(|e| panic!("{e}"));
    }
    let init = Init::Weights(mae_weights(&dir.join("mae.safetensors")));
    let req = request(Task::Segmentation, &root, init, TaskSettings::Segmentation(tiny_seg(3)));
    let resolved = finetune::resolve(&req).unwrap_or_else(|e| panic!("{e}"));
    // both channels are used: the network takes 2 stacked planes
    assert_eq!(
        (resolved.config.preprocess.in_chans, resolved.config.preprocess.channels),
        (2, vismae_run::Channels::Stack)
    );
    let run = dir.join("run");
    let (_, out) = finetune::start::<Train>(&resolved, &run, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let finetune::Outcome::Seg(o) = out else { panic!("a segmentation run") };
    let report = std::fs::read_to_string(run.join("transfer_report.txt")).unwrap_or_default();
    assert!(report.contains("adapted from 3 to 2 input channels"), "{report}");
    let logged = logged_at_best(&run, o.best.1, "val_dice");
    predict_val(&run, &root, &dir.join("pred"));
    let cfg = FinetuneConfig::read(&run, None).unwrap_or_else(|e| panic!("{e}"));
    let labels = vismae_data::volume::read_nifti(&dir.join(format!("pred/{}.nii.gz", cfg.val_cases[0])))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(labels.dims, [nx, ny, nz, 1]);
    let e = evaluate::seg(&dir.join("pred"), &Truth::Labelled(root.clone()), &dir.join("eval"), false)
        .unwrap_or_else(|e| panic!("{e}"));
    let evaluated = e.foreground_mean.dice.unwrap_or(f64::NAN);
    assert!((evaluated - logged).abs() < 1e-4, "logged best validation Dice {logged}, evaluate seg {evaluated}");
}
