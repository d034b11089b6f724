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

/// Median seconds of `step(1..=steps)`, after the warm-up `step(0)`, which is not timed.
fn median_time(steps: usize, mut step: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let mut times = Vec::new();
    for i in 0..=steps {
        let t = Instant::now();
        step(i)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}

/// Waits until `device` has finished its queued work.
fn sync<B: Backend>(device: &B::Device) -> Result<()> {
    B::sync(device).map_err(|e| TrainError::invalid(format!("device sync failed: {e:?}")))
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
    let mut slot = Some(variant.mae(3).init::<B>(device)); // the model: each step takes it, AdamW returns it
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_weight_decay(0.05)
        .init::<B, vismae_model::SwinMae<B>>();
    let data: Vec<f32> = (0..batch * 3 * size * size).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let m = median_time(steps, |step| {
        let model = slot.take().ok_or_else(|| TrainError::invalid("an earlier step failed"))?;
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
        slot = Some(optim.step(1e-4, model, grads));
        sync::<B>(device)
    })?;
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
    let m = median_time(steps, |_| {
        // the batch split over the CPU workers (one on a GPU build), as `predict` runs it
        let parts = crate::parallel::map_chunks(batch, |a, b| {
            model.forward(x.clone().narrow(0, a, b - a)).into_data().as_bytes().len()
        });
        debug_assert_eq!(parts.len(), crate::parallel::workers().clamp(1, batch));
        Ok(())
    })?;
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

/// One row of [`kernels`]: a hot operation of the Swin-UNet in one float type and implementation.
#[derive(Clone, Debug)]
pub struct KernelTiming {
    /// The operation, its shape and how it ran.
    pub what: String,
    /// Median milliseconds per call.
    pub median_ms: f64,
    /// Largest difference from the float32 reference result, relative to that result's largest
    /// magnitude (`None` for the reference itself).
    pub error: Option<f64>,
}

/// Median seconds of `steps` calls of `f` (each until the device is done) after one warm-up call,
/// and the last call's values as f32 (the cast is not timed).
fn time_values<B: Backend, const D: usize>(
    steps: usize,
    device: &B::Device,
    mut f: impl FnMut() -> Tensor<B, D>,
) -> Result<(f64, Vec<f32>)> {
    let mut last = None;
    let m = median_time(steps, |_| {
        last = Some(f());
        sync::<B>(device)
    })?;
    let values = last.map(|t| t.cast(burn::tensor::FloatDType::F32).into_data().to_vec::<f32>().unwrap_or_default());
    Ok((m, values.unwrap_or_default()))
}

/// `max |got - want| / max |want|`.
fn relative_error(want: &[f32], got: &[f32]) -> f64 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE) as f64;
    let worst = want.iter().zip(got).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) as f64;
    if want.len() == got.len() { worst / scale } else { f64::INFINITY }
}

/// Times the two operations that take most of Swin-UNet inference (the Linear layers, about half,
/// and window attention, about a quarter) at the shapes of its first stage for a `batch` of 224 px
/// images, in float32, float16 and bfloat16 (values cast by the backend), and window attention by
/// burn's separate ops, by burn's `attention` module op (relative bias passed as `attn_bias`) and by
/// vismae's fused kernel ([`vismae_model::cpu::window_attention`], flex only). Each half-precision
/// row says how far its result is from float32's.
pub fn kernels<B: Backend>(batch: usize, steps: usize, device: &B::Device) -> Result<Vec<KernelTiming>> {
    use burn::tensor::FloatDType;
    use burn::tensor::module::{attention, linear};
    const HALF: [(&str, FloatDType); 2] = [("f16", FloatDType::F16), ("bf16", FloatDType::BF16)];
    B::seed(device, 0);
    let normal = Distribution::Normal(0.0, 1.0);
    let mut rows = Vec::new();
    let mut push = |what: String, (s, got): (f64, Vec<f32>), want: Option<&[f32]>| {
        rows.push(KernelTiming { what, median_ms: s * 1e3, error: want.map(|w| relative_error(w, &got)) });
        got
    };

    // Linear: the MLP's first layer of stage 1, 3,136 tokens per image, 96 -> 384 channels
    let (m, cin, cout) = (batch * 56 * 56, 96, 384);
    let x = Tensor::<B, 2>::random([m, cin], normal, device);
    let w = Tensor::<B, 2>::random([cin, cout], normal, device).mul_scalar((cin as f64).powf(-0.5));
    let b = Tensor::<B, 1>::random([cout], normal, device);
    let lin = |dt: FloatDType| {
        let (x, w, b) = (x.clone().cast(dt), w.clone().cast(dt), b.clone().cast(dt));
        move || linear(x.clone(), w.clone(), Some(b.clone()))
    };
    let shape = format!("Linear [{m}, {cin}] x [{cin}, {cout}] + bias");
    let want = push(format!("{shape}, f32"), time_values(steps, device, lin(FloatDType::F32))?, None);
    for (name, dt) in HALF {
        push(format!("{shape}, {name}"), time_values(steps, device, lin(dt))?, Some(&want));
    }

    // window attention of stage 1: 64 windows of 49 tokens per image, 3 heads of 32 channels
    let (bn, nh, l, hd) = (batch * 64, 3, 49, 32);
    let scale = (hd as f64).powf(-0.5);
    let qkv = Tensor::<B, 2>::random([3, bn * nh * l * hd], normal, device);
    let bias = Tensor::<B, 2>::random([1, nh * l * l], normal, device);
    let part = |k: usize| qkv.clone().narrow(0, k, 1).reshape([bn, nh, l, hd]);
    let (q, k, v) = (part(0), part(1), part(2));
    let merge = |out: Tensor<B, 4>| out.swap_dims(1, 2).reshape([bn * l, nh * hd]);
    let separate = || {
        let attn = q.clone().mul_scalar(scale).matmul(k.clone().swap_dims(2, 3)) + bias.clone().reshape([1, nh, l, l]);
        merge(burn::tensor::activation::softmax(attn, 3).matmul(v.clone()))
    };
    let shape = format!("window attention [{bn} windows, {nh} heads, {l} tokens, {hd} channels] + bias");
    let want = push(
        format!("{shape}, burn's ops (matmul, add, softmax, matmul), f32"),
        time_values(steps, device, separate)?,
        None,
    );
    let module_op = |dt: FloatDType| {
        let (q, k, v) = (q.clone().cast(dt), k.clone().cast(dt), v.clone().cast(dt));
        let bias = bias.clone().reshape([1, nh, l, l]).expand([bn, nh, l, l]).cast(dt);
        let options = burn::tensor::ops::AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false };
        move || merge(attention(q.clone(), k.clone(), v.clone(), None, Some(bias.clone()), options))
    };
    for (name, dt) in [("f32", FloatDType::F32)].into_iter().chain(HALF) {
        let row = format!("{shape}, burn's attention op, {name}");
        push(row, time_values(steps, device, module_op(dt))?, Some(&want));
    }
    let attn_shape =
        vismae_model::cpu::AttentionShape { windows: bn, bias_windows: 1, heads: nh, tokens: l, head_dim: hd };
    if vismae_model::cpu::window_attention(&qkv, &bias, attn_shape, scale as f32).is_some() {
        let fused =
            || vismae_model::cpu::window_attention(&qkv, &bias, attn_shape, scale as f32).unwrap_or_else(separate);
        push(format!("{shape}, vismae's fused kernel, f32"), time_values(steps, device, fused)?, Some(&want));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every implementation computes the same thing: the f32 rows within 1e-5 of the reference, the
    /// half-precision rows within their format's rounding, and the fused kernel runs on flex.
    #[test]
    fn kernel_rows_agree_with_float32() {
        let rows = kernels::<burn::backend::Flex>(1, 1, &Default::default()).unwrap();
        assert_eq!(rows.len(), 8, "{rows:?}");
        assert!(rows.iter().any(|r| r.what.contains("fused kernel")));
        for r in &rows {
            let bound = if r.what.ends_with("bf16") {
                2e-2
            } else if r.what.ends_with("f16") {
                4e-3
            } else {
                1e-5
            };
            let error = r.error.unwrap_or(0.0);
            assert!(error < bound && r.median_ms > 0.0, "{}: error {error:e}, {} ms", r.what, r.median_ms);
        }
        assert_eq!(rows.iter().filter(|r| r.error.is_none()).count(), 2);
    }
}
