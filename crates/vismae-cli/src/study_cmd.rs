//! `vismae study STUDY.toml --out DIR`: arguments in, the workflow's study, its summary printed.

use std::path::PathBuf;

use vismae_workflow::study;

use crate::pretrain_cmd::NodeArgs;
use crate::{TrainBackend, default_devices, device};

/// Arguments of `vismae study`.
#[derive(clap::Args, Debug)]
pub struct StudyArgs {
    /// The study file (TOML: datasets, initialisations, folds, fractions, fine-tuning settings).
    pub file: PathBuf,
    /// The study folder: new, or one this study ran in before (it continues).
    #[arg(long)]
    pub out: PathBuf,
    /// Cells run at once, unless the study file says (default: one per CPU core; one on a GPU).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// On several nodes every cell trains on all of them, one cell after another (the study
    /// folder must be one they share); rank 0 then scores the cells and writes the report.
    #[command(flatten)]
    pub nodes: NodeArgs,
}

pub fn run(a: StudyArgs) -> anyhow::Result<()> {
    let jobs = a.jobs.unwrap_or_else(default_devices);
    let nodes = a.nodes.topology()?;
    let rank = nodes.as_ref().map_or(0, |t| t.rank);
    let s = study::run_on::<TrainBackend>(&a.file, &a.out, &device(), jobs, nodes, &|line| println!("{line}"))?;
    if !s.reported {
        println!(
            "node {rank}: trained {} cells with the other nodes ({:.0} s); rank 0 scores them and writes the report",
            s.ran, s.seconds
        );
        return Ok(());
    }
    println!(
        "{} cells: {} ran now, {} finished earlier, {} failed ({:.0} s)",
        s.cells,
        s.ran,
        s.skipped,
        s.failed.len(),
        s.seconds
    );
    for (cell, e) in &s.failed {
        println!("  failed: {cell}: {e}");
    }
    println!("report: {}", s.report.join("report.md").display());
    println!("        {}", s.report.join("stats.csv").display());
    if !s.failed.is_empty() {
        anyhow::bail!(
            "{} of {} cells failed (listed above and in {}); run the same command again to retry them",
            s.failed.len(),
            s.cells,
            a.out.join("failures.jsonl").display()
        );
    }
    Ok(())
}
