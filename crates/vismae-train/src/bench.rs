//! `vismae bench`: times MAE training steps and Swin-UNet inference on random images and prints
//! images per second, step time and peak memory. A program that prints numbers, not a test.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
#[allow(unused_imports)]
use burn::tensor::backend::DeviceOps;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use vismae_model::{Variant, VariantExt};

use crate::error::{Result, TrainError};

/// Measured timings.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// What was timed.
    pub what: String,
    /// Median seconds per step.
    pub median_s: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
    /// Peak resident memory of the process, in MiB (Linux), if known.
    pub peak_rss_mib: Option<f64>,
}

/// Peak resident set size from `/proc/self/status` (`VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `steps` MAE training steps (forward, backward, AdamW) after one warm-up step, with the
/// batch split over `devices` data-parallel replicas as `vismae pretrain --devices` does.
pub fn pretrain<B: AutodiffBackend>(
    variant: Variant,
    batch: usize,
    size: usize,
    steps: usize,
    devices: &[B::Device],
) -> Result<BenchResult> {
    let device = devices.first().ok_or_else(|| TrainError::invalid("no device"))?;
    B::seed(device, 0);
    let mut model = variant.mae(3).init::<B>(device);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_weight_decay(0.05)
        .init::<B, vismae_model::SwinMae<B>>();
    let data: Vec<f32> = (0..batch * 3 * size * size).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let mut times = Vec::new();
    for step in 0..=steps {
        let t = Instant::now();
        let plan = vismae_model::masking::plan_from_seed(model.mask_geometry(size, size), batch, step as u64)?;
        let (grads, _) = crate::pretrain::data_parallel(
            &model,
            devices,
            batch,
            crate::pretrain::Share::local(devices.len()),
            |replica: &vismae_model::SwinMae<B>, dev, (a, b), _| {
                let k = b - a;
                let per = 3 * size * size;
                let chunk = data[a * per..b * per].to_vec();
                let sub = crate::pretrain::mae::sub_plan(&plan, a, b);
                let x = Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(chunk, [k, 3, size, size]), dev);
                let out = replica.forward(x, &sub)?;
                let loss = out.loss * (k as f64 / batch as f64);
                let value = crate::losses::scalar(loss.clone());
                Ok((GradientsParams::from_grads::<B, _>(loss.backward(), replica), value))
            },
        )?;
        let grads = grads.to_device(device, &model);
        model = optim.step(1e-4, model, grads);
        B::sync(device).map_err(|e| TrainError::invalid(format!("device sync failed: {e:?}")))?;
        if step > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let m = median(times);
    Ok(BenchResult {
        what: format!("MAE train step, {} batch {batch} at {size}px, {} replica(s)", variant.name(), devices.len()),
        median_s: m,
        images_per_s: batch as f64 / m,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Times `steps` Swin-UNet forward passes after one warm-up pass.
pub fn unet_inference<B: Backend>(
    variant: Variant,
    batch: usize,
    size: usize,
    steps: usize,
    device: &B::Device,
) -> Result<BenchResult> {
    B::seed(device, 0);
    let model = variant.unet(3, 3).init::<B>(device);
    let x = Tensor::<B, 4>::random([batch, 3, size, size], Distribution::Default, device);
    let mut times = Vec::new();
    for step in 0..=steps {
        let t = Instant::now();
        // the batch split over the CPU workers (one on a GPU build), as `predict` runs it
        let parts = crate::parallel::map_chunks(batch, |a, b| {
            model.forward(x.clone().narrow(0, a, b - a)).into_data().as_bytes().len()
        });
        debug_assert_eq!(parts.len(), crate::parallel::workers().clamp(1, batch));
        if step > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let m = median(times);
    Ok(BenchResult {
        what: format!(
            "Swin-UNet inference, {} batch {batch} at {size}px, {} worker(s)",
            variant.name(),
            crate::parallel::workers().clamp(1, batch)
        ),
        median_s: m,
        images_per_s: batch as f64 / m,
        peak_rss_mib: peak_rss_mib(),
    })
}
