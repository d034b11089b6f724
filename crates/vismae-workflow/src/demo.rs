//! `vismae demo`: the whole method with the real commands' engines, on the sample data when it
//! is there (else phantoms). Builds the pre-training and labelled sets, pre-trains a small MAE,
//! holds out test cases, fine-tunes a Swin-UNet from the MAE weights and from scratch at two
//! label fractions of one fold, predicts and evaluates the held-out cases, and writes a report
//! (table, label-efficiency figure, curves, reconstructions, overlays).

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use vismae_data::splits::grouped_kfold;
use vismae_run::{Augment, GroupBy, Init, PretrainSettings, RunDir, SegSettings, Task, TaskSettings, Variant};
use vismae_train::finetune::{self, FinetuneRequest, SettingsFrom};
use vismae_train::predict::PredictOptions;
use vismae_train::pretrain;

use crate::error::{Result, WorkflowError};
use crate::evaluate::{self, Truth};

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Folder for everything the demo writes (new or empty).
    pub out: PathBuf,
    /// Folder filled by `scripts/fetch-sample-data.sh` (its `raw/` files); without it, phantoms.
    pub sample_data: Option<PathBuf>,
    /// Model size.
    pub variant: Variant,
    /// Image side (a multiple of 16).
    pub size: usize,
    /// Pre-training steps (batch 8).
    pub pretrain_steps: usize,
    /// Fine-tuning epochs per run.
    pub epochs: usize,
    /// The smaller label fraction (the larger is 100 %).
    pub fraction: f64,
    /// Seed of data order, masks and initialisation.
    pub seed: u64,
}

/// One row of the demo's table.
#[derive(Clone, Debug)]
pub struct DemoRow {
    /// `vis-mae` or `scratch`.
    pub init: String,
    /// Label fraction.
    pub fraction: f64,
    /// Foreground Dice on the held-out test cases.
    pub test_dice: f64,
}

/// What the demo did.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    /// The table.
    pub rows: Vec<DemoRow>,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// Seconds spent.
    pub seconds: f64,
}

/// Runs the demo; `say` receives the progress lines; `devices(n)` gives `n` training replicas,
/// `default_devices` is what the build's automatic choice is.
pub fn run<B: AutodiffBackend>(
    a: &DemoOptions,
    devices: &dyn Fn(usize) -> Vec<B::Device>,
    default_devices: usize,
    say: &dyn Fn(String),
) -> Result<DemoSummary> {
    let started = Instant::now();
    let root = RunDir::create(&a.out)?;
    let out = std::path::absolute(root.path()).unwrap_or_else(|_| root.path().to_path_buf());
    let sample = a.sample_data.as_deref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    if let Some(s) = &sample
        && !s.join("raw").is_dir()
    {
        say(format!(
            "{} has no raw/ folder: run scripts/fetch-sample-data.sh {} first; using phantoms",
            s.display(),
            s.display()
        ));
    }
    say("[1/6] data".into());
    let sets = crate::sample::build(sample.as_deref(), &out.join("data"), a.size, a.seed)?;
    say(format!("      {}", sets.origin));

    say(format!("[2/6] pre-training a {} MAE for {} steps", a.variant, a.pretrain_steps));
    let mut settings = PretrainSettings {
        variant: a.variant,
        steps: Some(a.pretrain_steps),
        batch_size: 8,
        lr: 1e-3,
        min_lr: 1e-5,
        warmup_epochs: Some(0.0),
        seed: a.seed,
        reconstruct_every: 0,
        reconstruct_images: 4,
        checkpoint_every: a.pretrain_steps.max(1),
        ..PretrainSettings::default()
    };
    // warm up over about the first 15 % of the steps
    let probe = pretrain::resolve(&settings, &sets.pretrain, default_devices)?;
    settings.warmup_epochs = Some(0.15 * a.pretrain_steps as f64 / probe.steps_per_epoch as f64);
    let cfg = pretrain::resolve(&settings, &sets.pretrain, default_devices)?;
    let (mae_dir, pt) = pretrain::start::<B>(&cfg, &out.join("runs/pretrain"), &devices(cfg.devices), false)?;
    say(format!(
        "      {} images; loss {:.4} (first 10 steps) -> {:.4} (last 10) in {:.0} s",
        cfg.images, pt.loss_first_last.0, pt.loss_first_last.1, pt.seconds
    ));

    say("[3/6] splits: held-out test cases, then fold 0 of 5 with nested label fractions".into());
    let set = vismae_data::labelled::open(&sets.labelled)?;
    let items = crate::split::items(&set, GroupBy::Patient)?;
    // one fold of five is the test set; the others are split again into 5 folds
    let outer = grouped_kfold(&items, 5, a.seed, &[1.0])?;
    let test_ids = outer[0].val.clone();
    let rest: Vec<_> = items.iter().filter(|i| !test_ids.contains(&i.id)).cloned().collect();
    let folds = grouped_kfold(&rest, 5, a.seed, &[a.fraction, 1.0])?;
    let splits_path = out.join("data/splits.json");
    let text = serde_json::to_string_pretty(&folds).map_err(|e| WorkflowError::invalid(e.to_string()))?;
    std::fs::write(&splits_path, text).map_err(WorkflowError::io(&splits_path))?;
    let test: Vec<(String, Vec<PathBuf>)> =
        set.pick(&test_ids).iter().map(|s| (s.id.clone(), s.images.clone())).collect();
    say(format!(
        "      {} cases: {} test, {} train, {} validation",
        set.samples.len(),
        test.len(),
        folds[0].train.len(),
        folds[0].val.len()
    ));

    say(format!("[4/6] fine-tuning Swin-UNets ({} epochs each)", a.epochs));
    let mae_weights = mae_dir.join("weights.safetensors");
    let mut runs = vec![mae_dir.path().to_path_buf()];
    let mut rows = Vec::new();
    let device = devices(1).into_iter().next().ok_or_else(|| WorkflowError::invalid("no device"))?;
    let seg = SegSettings {
        variant: a.variant,
        size: a.size,
        epochs: a.epochs,
        warmup_epochs: Some(a.epochs as f64 / 10.0),
        batch_size: 8,
        seed: a.seed,
        checkpoint_every: a.epochs.max(1),
        keep_checkpoints: 1,
        // quarter turns and flips: the reference's rotations and affines need more epochs than a
        // few-minute demo has
        augment: Augment::Flip,
        ..SegSettings::default()
    };
    for fraction in [a.fraction, 1.0] {
        for init in ["vis-mae", "scratch"] {
            let name = format!("seg-{init}-{:.0}pct", fraction * 100.0);
            let req = FinetuneRequest {
                task: Task::Segmentation,
                data: sets.labelled.clone(),
                init: if init == "scratch" { Init::Scratch } else { Init::Weights(mae_weights.clone()) },
                init_name: None,
                splits: Some(splits_path.clone()),
                folds: 5,
                fold: 0,
                fraction,
                test_cases: test_ids.clone(),
                settings: SettingsFrom::Given(TaskSettings::Segmentation(seg.clone())),
            };
            let resolved = finetune::resolve(&req)?;
            let (run_dir, outcome) = finetune::start::<B>(&resolved, &out.join("runs").join(&name), &device)?;
            let finetune::Outcome::Seg(r) = outcome else { unreachable!("a segmentation run") };
            // held-out evaluation with the best epoch's weights, through `predict` and `evaluate seg`
            let pred = run_dir.join("test-predictions");
            crate::predict::segment_cases::<B::InnerBackend>(
                run_dir.path(),
                &test,
                &pred,
                PredictOptions::default(),
                &device,
            )?;
            let e = evaluate::seg(&pred, &Truth::Labelled(sets.labelled.clone()), &run_dir.join("test"), false)?;
            let dice = e.foreground_mean.dice.unwrap_or(f64::NAN);
            say(format!(
                "      {name}: {} training images, best validation Dice {:.4} (epoch {}), test Dice {dice:.4}",
                r.images.0, r.best.0, r.best.1
            ));
            rows.push(DemoRow { init: init.into(), fraction, test_dice: dice });
            runs.push(run_dir.path().to_path_buf());
        }
    }

    say("[5/6] overlays of two held-out cases (VIS-MAE, 100 % labels)".into());
    let best = out.join(format!("runs/seg-vis-mae-{:.0}pct", 100.0));
    let overlay_dir = out.join("overlays");
    let opts = PredictOptions { overlay: true, probabilities: false };
    let written = crate::predict::segment_cases::<B::InnerBackend>(
        &best,
        &test[..test.len().min(2)],
        &overlay_dir,
        opts,
        &device,
    )?;
    let extras: Vec<vismae_report::Extra> = written
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".overlay.png"))
        .map(|f| {
            let case = f.file_name().map(|n| n.to_string_lossy().replace(".overlay.png", "")).unwrap_or_default();
            vismae_report::Extra {
                section: "Predictions on held-out cases".into(),
                caption: format!("case {case}: predicted structures over the image (middle slice)"),
                path: f,
            }
        })
        .collect();

    say("[6/6] report".into());
    let title = format!("vismae demo: VIS-MAE pre-training and label-efficient segmentation ({})", sets.origin);
    let report = vismae_report::build(&runs, &out.join("report"), &title, &extras)?;
    Ok(DemoSummary { rows, markdown: report.markdown, html: report.html, seconds: started.elapsed().as_secs_f64() })
}
