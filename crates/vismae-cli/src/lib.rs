//! vismae-cli: argument parsing, backend/device selection, and exit codes. Each subcommand
//! resolves its arguments and calls one library function; nothing here computes.

mod weights_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vismae_model::Variant;
use vismae_train::demo::{self, DemoConfig};
use vismae_train::run_dir::RunDir;

/// The backend every command runs on: burn's CPU `flex` backend by default, CUDA with the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub type Backend = burn::backend::Flex;
/// The backend every command runs on: burn's CPU `flex` backend by default, CUDA with the `cuda` feature.
#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;
/// The training backend.
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// The device of [`Backend`].
pub fn device() -> <Backend as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

#[derive(Parser, Debug)]
#[command(
    name = "vismae",
    version,
    about = "VIS-MAE: masked-autoencoder pre-training and fine-tuning for medical images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pre-train, transfer and fine-tune on generated phantoms, end to end, in a few CPU minutes.
    Demo {
        /// Folder for the run (must not exist or be empty).
        #[arg(long, default_value = "vismae-demo")]
        out: PathBuf,
        /// Model size: tiny, small or vis-mae.
        #[arg(long, default_value = "tiny")]
        variant: String,
        /// Pre-training steps.
        #[arg(long, default_value_t = DemoConfig::default().pretrain_steps)]
        pretrain_steps: usize,
        /// Fine-tuning steps per initialisation.
        #[arg(long, default_value_t = DemoConfig::default().finetune_steps)]
        finetune_steps: usize,
        /// Seed of data, masks and initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Time MAE pre-training steps or Swin-UNet inference on random images.
    Bench {
        /// `pretrain` or `unet`.
        what: String,
        /// Model size: tiny, small or vis-mae.
        #[arg(long, default_value = "vis-mae")]
        variant: String,
        /// Images per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// Timed steps (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
    /// Inspect and convert weight files.
    Weights {
        #[command(subcommand)]
        command: weights_cmd::WeightsCommand,
    },
}

/// Parses the command line, runs the command, and maps errors to exit status 1 with a message.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_variant(name: &str) -> anyhow::Result<Variant> {
    Variant::from_name(name).ok_or_else(|| anyhow::anyhow!("unknown variant {name:?}: use tiny, small or vis-mae"))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { out, variant, pretrain_steps, finetune_steps, seed } => {
            let cfg = DemoConfig {
                variant: parse_variant(&variant)?,
                pretrain_steps,
                finetune_steps,
                seed,
                ..DemoConfig::default()
            };
            let run_dir = RunDir::create(&out)?;
            let report = demo::run::<TrainBackend>(&cfg, &run_dir, &device()).map_err(anyhow::Error::msg)?;
            println!();
            println!(
                "pre-training loss: {:.4} (first 10 steps) -> {:.4} (last 10)",
                report.pretrain_loss.0, report.pretrain_loss.1
            );
            println!("transfer MAE -> Swin-UNet: {} tensors applied (see transfer_report.txt)", report.transferred);
            println!("{:<10} {:>10} {:>12}", "init", "test Dice", "final loss");
            for r in &report.results {
                println!("{:<10} {:>10.4} {:>12.4}", r.init, r.dice, r.final_loss);
            }
            println!("finished in {:.0} s; run folder: {}", report.seconds, out.display());
            Ok(())
        }
        Command::Bench { what, variant, batch, size, steps } => {
            let variant = parse_variant(&variant)?;
            let r = match what.as_str() {
                "pretrain" => vismae_train::bench::pretrain::<TrainBackend>(variant, batch, size, steps, &device()),
                "unet" => vismae_train::bench::unet_inference::<Backend>(variant, batch, size, steps, &device()),
                other => anyhow::bail!("unknown benchmark {other:?}: use pretrain or unet"),
            }
            .map_err(anyhow::Error::msg)?;
            println!("backend:      {}", std::any::type_name::<Backend>());
            println!("benchmark:    {}", r.what);
            println!("step time:    {:.3} s (median of {steps})", r.median_s);
            println!("throughput:   {:.2} images/s", r.images_per_s);
            if let Some(m) = r.peak_rss_mib {
                println!("peak memory:  {m:.0} MiB (process RSS)");
            }
            Ok(())
        }
        Command::Weights { command } => weights_cmd::run(command),
    }
}
