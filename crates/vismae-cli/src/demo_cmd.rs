//! `vismae demo`: the whole method with the real commands' code, on the sample data when it is
//! there (else phantoms). Builds the pre-training and labelled sets, pre-trains a small MAE,
//! holds out test cases, fine-tunes a Swin-UNet from the MAE weights and from scratch at two
//! label fractions of one fold, predicts and evaluates the held-out cases, and writes a report
//! (table, label-efficiency figure, curves, reconstructions, overlays).

use std::path::{Path, PathBuf};
use std::time::Instant;

use vismae_data::labelled::{self, Sample};
use vismae_data::splits::{Item, grouped_kfold};
use vismae_model::weights::read_state_dict;
use vismae_train::finetune::FinetuneConfig;
use vismae_train::finetune_seg::{self, SegSettings};
use vismae_train::pretrain::{self, resolve};
use vismae_train::pretrain_config::PretrainSettings;
use vismae_train::run_dir::RunDir;

use crate::{TrainBackend, absolute, device, devices};

/// Settings of the demo.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Folder for everything the demo writes (new or empty).
    #[arg(long, default_value = "vismae-demo")]
    pub out: PathBuf,
    /// Folder filled by scripts/fetch-sample-data.sh (its raw/ files); without it, phantoms.
    #[arg(long)]
    pub sample_data: Option<PathBuf>,
    /// Model size: tiny, small or vis-mae.
    #[arg(long, default_value = "tiny")]
    pub variant: String,
    /// Image side (a multiple of 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Pre-training steps (batch 8).
    #[arg(long, default_value_t = 300)]
    pub pretrain_steps: usize,
    /// Fine-tuning epochs per run.
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// The smaller label fraction (the larger is 100 %).
    #[arg(long, default_value_t = 0.25)]
    pub fraction: f64,
    /// Seed of data order, masks and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Copies the label maps of `cases` into `dir`, named as predictions are (`<case><ending>`).
fn gt_folder(cases: &[&Sample], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for s in cases {
        if let labelled::Target::Mask(m) = &s.target {
            let name = m.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let ending = name.find('.').map(|i| &name[i..]).unwrap_or("");
            std::fs::copy(m, dir.join(format!("{}{ending}", s.id)))?;
        }
    }
    Ok(())
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = RunDir::create(&a.out)?;
    let out = absolute(root.path());
    let sample = a.sample_data.as_deref().map(absolute);
    if let Some(s) = &sample
        && !s.join("raw").is_dir()
    {
        eprintln!(
            "{} has no raw/ folder: run scripts/fetch-sample-data.sh {} first; using phantoms",
            s.display(),
            s.display()
        );
    }
    println!("[1/6] data");
    let sets = crate::sample_cmd::build(sample.as_deref(), &out.join("data"), a.size, a.seed)?;
    println!("      {}", sets.origin);

    println!("[2/6] pre-training a {} MAE for {} steps", a.variant, a.pretrain_steps);
    let settings = PretrainSettings {
        variant: a.variant.clone(),
        steps: Some(a.pretrain_steps),
        batch_size: 8,
        lr: 1e-3,
        min_lr: 1e-5,
        warmup_epochs: 1.0,
        seed: a.seed,
        reconstruct_every: 0,
        reconstruct_images: 4,
        checkpoint_every: a.pretrain_steps.max(1),
        ..PretrainSettings::default()
    };
    let cfg = resolve(&settings, &sets.pretrain).map_err(anyhow::Error::msg)?;
    let mae_dir = RunDir::create(&out.join("runs/pretrain"))?;
    mae_dir.write_json("config.json", &cfg)?;
    let devs = devices(settings.devices);
    let pt = pretrain::run::<TrainBackend>(&cfg, &mae_dir, &devs, false, false).map_err(anyhow::Error::msg)?;
    println!(
        "      {} images; loss {:.4} (first 10 steps) -> {:.4} (last 10) in {:.0} s",
        cfg.images, pt.loss_first_last.0, pt.loss_first_last.1, pt.seconds
    );

    println!("[3/6] splits: held-out test cases, then fold 0 of 5 with nested label fractions");
    let set = labelled::open(&sets.labelled)?;
    let items: Vec<Item> =
        set.samples.iter().map(|s| Item { id: s.id.clone(), group: s.group.clone(), class: None }).collect();
    // one fold of five is the test set; the others are split again into 5 folds
    let outer = grouped_kfold(&items, 5, a.seed, &[1.0]).map_err(anyhow::Error::msg)?;
    let test_ids = outer[0].val.clone();
    let rest: Vec<Item> = items.iter().filter(|i| !test_ids.contains(&i.id)).cloned().collect();
    let folds = grouped_kfold(&rest, 5, a.seed, &[a.fraction, 1.0]).map_err(anyhow::Error::msg)?;
    let splits_path = out.join("data/splits.json");
    std::fs::write(&splits_path, serde_json::to_string_pretty(&folds)?)?;
    let pick = |ids: &[String]| -> Vec<&Sample> { set.samples.iter().filter(|s| ids.contains(&s.id)).collect() };
    let test = pick(&test_ids);
    let gt = out.join("data/test-labels");
    gt_folder(&test, &gt)?;
    println!(
        "      {} cases: {} test, {} train, {} validation",
        set.samples.len(),
        test.len(),
        folds[0].train.len(),
        folds[0].val.len()
    );

    println!("[4/6] fine-tuning Swin-UNets ({} epochs each)", a.epochs);
    let mae_weights = mae_dir.join("weights.safetensors");
    let init_sd = read_state_dict(&mae_weights)?;
    let mut runs = vec![mae_dir.path().to_path_buf()];
    let mut table = Vec::new();
    let m = crate::SegPredictor::load;
    for fraction in [a.fraction, 1.0] {
        let key = folds[0]
            .fractions
            .keys()
            .find(|k| k.parse::<f64>().is_ok_and(|v| (v - fraction).abs() < 1e-9))
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("fraction {fraction} missing from the splits"))?;
        let train_ids = folds[0].fractions[&key].clone();
        for init in ["vis-mae", "scratch"] {
            let name = format!("seg-{init}-{:.0}pct", fraction * 100.0);
            let run_dir = RunDir::create(&out.join("runs").join(&name))?;
            let s = SegSettings {
                variant: a.variant.clone(),
                size: a.size,
                epochs: a.epochs,
                warmup_epochs: (a.epochs as f64 / 10.0).max(1.0),
                batch_size: 8,
                seed: a.seed,
                checkpoint_every: a.epochs.max(1),
                keep_checkpoints: 1,
                // quarter turns and flips: the reference's rotations and affines need more epochs
                // than a few-minute demo has
                augment: vismae_train::augment::Augment::Flip,
                ..SegSettings::default()
            };
            let init_path = if init == "scratch" { "scratch".to_string() } else { mae_weights.display().to_string() };
            let config = FinetuneConfig {
                task: "segmentation".into(),
                data: sets.labelled.clone(),
                init: init_path,
                fold: 0,
                fraction,
                splits: Some(splits_path.clone()),
                train_cases: train_ids.clone(),
                val_cases: folds[0].val.clone(),
                test_cases: test_ids.clone(),
                classes: set.classes.clone(),
                settings: serde_json::to_value(&s)?,
            };
            run_dir.write_json("config.json", &config)?;
            let sd = (init != "scratch").then_some(&init_sd);
            let r = finetune_seg::run::<TrainBackend>(
                &set,
                &pick(&train_ids),
                &pick(&folds[0].val),
                sd,
                &s,
                &run_dir,
                false,
                &device(),
            )
            .map_err(anyhow::Error::msg)?;
            // held-out evaluation with the best epoch's weights, through `predict` and `evaluate seg`
            let pred = run_dir.join("test-predictions");
            std::fs::create_dir_all(&pred)?;
            let model = m(run_dir.path())?;
            for c in &test {
                model.predict(&c.images[0], &c.id, &pred, false)?;
            }
            crate::evaluate_cmd::seg(&pred, &gt, &run_dir.join("test"), false, true)?;
            let summary: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(run_dir.join("test/summary.json"))?)?;
            let dice = summary["foreground_mean"]["dice"].as_f64().unwrap_or(f64::NAN);
            println!(
                "      {name}: {} training images, best validation Dice {:.4} (epoch {}), test Dice {dice:.4}",
                r.images.0, r.best.0, r.best.1
            );
            table.push((init, fraction, dice));
            runs.push(run_dir.path().to_path_buf());
        }
    }

    println!("[5/6] overlays of two held-out cases (VIS-MAE, 100 % labels)");
    let best = out.join(format!("runs/seg-vis-mae-{:.0}pct", 100.0));
    let overlay_dir = out.join("overlays");
    std::fs::create_dir_all(&overlay_dir)?;
    let model = m(&best)?;
    let mut extras = Vec::new();
    for c in test.iter().take(2) {
        for f in model.predict(&c.images[0], &c.id, &overlay_dir, true)? {
            if f.to_string_lossy().ends_with(".overlay.png") {
                extras.push(vismae_report::Extra {
                    section: "Predictions on held-out cases".into(),
                    caption: format!("case {}: predicted structures over the image (middle slice)", c.id),
                    path: f,
                });
            }
        }
    }

    println!("[6/6] report");
    let title = format!("vismae demo: VIS-MAE pre-training and label-efficient segmentation ({})", sets.origin);
    let report = vismae_report::build(&runs, &out.join("report"), &title, &extras).map_err(anyhow::Error::msg)?;
    println!();
    println!("{:<10} {:>8} {:>10}", "init", "labels", "test Dice");
    for (init, f, d) in &table {
        println!("{:<10} {:>7.0}% {:>10.4}", init, f * 100.0, d);
    }
    println!();
    println!("finished in {:.0} s", started.elapsed().as_secs_f64());
    println!("report: {}", report.markdown.display());
    println!("        {}", report.html.display());
    Ok(())
}
