//! `vismae demo`: arguments in, the workflow's demo, its table printed.

use std::path::PathBuf;

use vismae_run::Variant;
use vismae_workflow::demo::{self, DemoOptions};

use crate::{TrainBackend, default_devices, devices};

/// Settings of the demo.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Folder for everything the demo writes (new or empty).
    #[arg(long, default_value = "vismae-demo")]
    pub out: PathBuf,
    /// Folder filled by scripts/fetch-sample-data.sh (its raw/ files); without it, phantoms.
    #[arg(long)]
    pub sample_data: Option<PathBuf>,
    /// Model size (the shipped weights are tiny; another size fine-tunes from the demo's own short pre-training).
    #[arg(long, value_enum, default_value = "tiny")]
    pub variant: Variant,
    /// Image side (a multiple of 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Steps of the short pre-training run (batch 8).
    #[arg(long, default_value_t = 200)]
    pub pretrain_steps: usize,
    /// Segmentation fine-tuning epochs per cell.
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    /// The smaller segmentation label fraction (the larger is 100 %).
    #[arg(long, default_value_t = 0.25)]
    pub fraction: f64,
    /// Classification epochs per cell at the smaller fraction.
    #[arg(long, default_value_t = 30)]
    pub cls_epochs: usize,
    /// Classification epochs per cell with all labels.
    #[arg(long, default_value_t = 3)]
    pub cls_epochs_all: usize,
    /// The smaller classification label fraction (the larger is 100 %).
    #[arg(long, default_value_t = 0.05)]
    pub cls_fraction: f64,
    /// Folds of each study (each fold's test cases are held out from its training and selection).
    #[arg(long, default_value_t = 3)]
    pub folds: usize,
    /// Seed of data order, masks and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let opts = DemoOptions {
        out: a.out,
        sample_data: a.sample_data,
        variant: a.variant,
        size: a.size,
        pretrain_steps: a.pretrain_steps,
        epochs: a.epochs,
        fraction: a.fraction,
        cls_epochs: a.cls_epochs,
        cls_epochs_all: a.cls_epochs_all,
        cls_fraction: a.cls_fraction,
        folds: a.folds,
        seed: a.seed,
    };
    let s = demo::run::<TrainBackend>(&opts, &devices, default_devices(), &|line| println!("{line}"))?;
    println!();
    println!("{:<15} {:<24} {:>7} {:>8} {:>18}", "task", "init", "labels", "metric", "test (mean ± sd)");
    for r in &s.rows {
        println!(
            "{:<15} {:<24} {:>6.0}% {:>8} {:>9.4} ± {:.4}",
            r.task,
            r.init,
            r.fraction * 100.0,
            r.metric,
            r.mean_sd.0,
            r.mean_sd.1
        );
    }
    println!();
    println!("what the numbers show:");
    for v in &s.verdicts {
        println!("  {v}");
    }
    println!("  {}", demo::SEEDS_CAVEAT);
    println!();
    println!("finished in {:.0} s", s.seconds);
    println!("report: {}", s.markdown.display());
    println!("        {}", s.html.display());
    Ok(())
}
