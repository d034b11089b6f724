//! `vismae bench pretrain|unet|kernels|ingest`: benchmarks that print numbers.

use std::path::PathBuf;

use vismae_run::Variant;

use crate::{Backend, TrainBackend, device, devices};

/// What to time.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BenchKind {
    /// MAE training steps (forward, backward, AdamW), data-parallel over --devices.
    Pretrain,
    /// Swin-UNet inference.
    Unet,
    /// The hot operations of Swin-UNet inference (Linear, window attention) in f32, f16 and bf16,
    /// and each implementation of window attention, with each result's distance from f32's.
    Kernels,
    /// Ingest of generated DICOM files and one epoch of the training reader.
    Ingest,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What to time.
    #[arg(value_enum)]
    what: BenchKind,
    /// ingest: images to generate and ingest.
    #[arg(long, default_value_t = 200_000)]
    images: usize,
    /// ingest: folder for the generated files and the dataset (new or empty).
    #[arg(long, default_value = "vismae-bench-ingest")]
    dir: PathBuf,
    /// ingest: threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// pretrain: data-parallel replicas (CPU workers, or GPUs with --features cuda).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Model size.
    #[arg(long, value_enum, default_value = "vis-mae")]
    variant: Variant,
    /// Images per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 224)]
    size: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let r = match a.what {
        BenchKind::Ingest => {
            let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let r = vismae_data::bench::scale(&a.dir, a.images, a.size, jobs, &|m| eprintln!("{m}"))?;
            println!(
                "benchmark:      ingest {} generated 64x64 DICOM files at {}px, {jobs} thread(s)",
                r.images, a.size
            );
            println!("ingest:         {:.0} images/s ({:.1} s)", r.images as f64 / r.ingest_s, r.ingest_s);
            println!(
                "reader:         {:.0} images/s (one epoch, batch 64, flips, {:.1} s)",
                r.images as f64 / r.reader_s,
                r.reader_s
            );
            println!("dataset:        {:.2} GiB of shards", r.dataset_bytes as f64 / (1u64 << 30) as f64);
            let rss: Vec<String> = r.rss_samples.iter().map(|(n, m)| format!("{n}: {m:.0}")).collect();
            println!("RSS (MiB) by files ingested: {}", rss.join(", "));
            println!("peak RSS after ingest: {:.0} MiB", r.ingest_peak_mib);
            let rd: Vec<String> = r.reader_samples.iter().map(|(n, a, f)| format!("{n}: {a:.0}+{f:.0}")).collect();
            println!("reader RSS (MiB, anonymous+file-backed shard pages) by images read: {}", rd.join(", "));
            println!(
                "peak RSS overall: {:.0} MiB (includes mapped shard pages, which are reclaimable page cache)",
                r.peak_rss_mib
            );
            return Ok(());
        }
        BenchKind::Kernels => {
            println!("backend:  {}", std::any::type_name::<Backend>());
            println!(
                "kernels at Swin-UNet stage 1 for a batch of {} 224 px images (median of {} calls):",
                a.batch, a.steps
            );
            for k in vismae_train::bench::kernels::<Backend>(a.batch, a.steps, &device())? {
                let error = k.error.map_or("reference".to_string(), |e| format!("error {e:.1e}"));
                println!("{:>9.2} ms  {}  ({error})", k.median_ms, k.what);
            }
            return Ok(());
        }
        BenchKind::Pretrain => {
            vismae_train::bench::pretrain::<TrainBackend>(a.variant, a.batch, a.size, a.steps, &devices(a.devices))?
        }
        BenchKind::Unet => {
            vismae_train::bench::unet_inference::<Backend>(a.variant, a.batch, a.size, a.steps, &device())?
        }
    };
    println!("backend:      {}", std::any::type_name::<Backend>());
    println!("benchmark:    {}", r.what);
    println!("step time:    {:.3} s (median of {})", r.median_s, a.steps);
    println!("throughput:   {:.2} images/s", r.images_per_s);
    if let Some(m) = r.peak_rss_mib {
        println!("peak memory:  {m:.0} MiB (process RSS)");
    }
    Ok(())
}
