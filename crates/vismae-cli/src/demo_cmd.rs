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
    /// Model size.
    #[arg(long, value_enum, default_value = "tiny")]
    pub variant: Variant,
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

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let opts = DemoOptions {
        out: a.out,
        sample_data: a.sample_data,
        variant: a.variant,
        size: a.size,
        pretrain_steps: a.pretrain_steps,
        epochs: a.epochs,
        fraction: a.fraction,
        seed: a.seed,
    };
    let s = demo::run::<TrainBackend>(&opts, &devices, default_devices(), &|line| println!("{line}"))?;
    println!();
    println!("{:<10} {:>8} {:>10}", "init", "labels", "test Dice");
    for r in &s.rows {
        println!("{:<10} {:>7.0}% {:>10.4}", r.init, r.fraction * 100.0, r.test_dice);
    }
    println!();
    println!("finished in {:.0} s", s.seconds);
    println!("report: {}", s.markdown.display());
    println!("        {}", s.html.display());
    Ok(())
}
