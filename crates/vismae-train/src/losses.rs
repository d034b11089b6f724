//! Training losses. Segmentation: `dice_weight * Dice + ce_weight * CE` where Dice is VIS-MAE's
//! soft Dice (SPEC §8.1: classes 1.. summed over batch and pixels, divided by all C classes).

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Tensor, TensorData, backend::Backend};

/// The value of a one-element tensor as f64 (NaN if it cannot be read), e.g. a loss for logging.
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_data().convert::<f64>().to_vec::<f64>().ok().and_then(|v| v.first().copied()).unwrap_or(f64::NAN)
}

/// One-hot `[B, C, H, W]` float tensor of `B` label maps of `H x W`.
pub fn one_hot<B: Backend>(labels: &[u8], b: usize, c: usize, h: usize, w: usize, device: &B::Device) -> Tensor<B, 4> {
    let mut data = vec![0f32; b * c * h * w];
    for i in 0..b {
        for p in 0..h * w {
            let k = labels[i * h * w + p] as usize;
            if k < c {
                data[(i * c + k) * h * w + p] = 1.0;
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [b, c, h, w]), device)
}

/// Cross-entropy averaged over pixels.
///
/// # Shapes
/// `logits [B, C, H, W]`, `target` one-hot of the same shape -> `[1]`
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    (log_softmax(logits, 1) * target).sum_dim(1).mean().neg()
}

/// VIS-MAE's soft Dice loss: `sum_{c>=1} (1 - (2 sum p g + 1e-5) / (sum p² + sum g² + 1e-5)) / C`.
pub fn dice_loss<B: Backend>(logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    let [b, c, h, w] = logits.dims();
    let flat = |t: Tensor<B, 4>| t.narrow(1, 1, c - 1).swap_dims(0, 1).reshape([c - 1, b * h * w]);
    let p = flat(softmax(logits, 1));
    let g = flat(target);
    let inter = (p.clone() * g.clone()).sum_dim(1);
    let denom = p.powi_scalar(2).sum_dim(1) + g.powi_scalar(2).sum_dim(1);
    let dice = (inter * 2.0 + 1e-5) / (denom + 1e-5);
    (dice.neg() + 1.0).sum().div_scalar(c as f64)
}

/// Weighted Dice + CE; the paper's default is Dice 0.4, CE 0.6.
pub fn seg_loss<B: Backend>(logits: Tensor<B, 4>, target: Tensor<B, 4>, dice_w: f64, ce_w: f64) -> Tensor<B, 1> {
    dice_loss(logits.clone(), target.clone()) * dice_w + cross_entropy(logits, target) * ce_w
}

/// The sums over a part of a batch that [`seg_combine`] turns into that batch's [`seg_loss`]:
/// per foreground class the Dice intersection, the sum of p² and the sum of g², then the summed
/// pixel cross-entropy (`3 (C - 1) + 1` values). Sums add over parts, so replicas holding parts
/// of one batch add theirs and every replica gets the loss of the whole batch.
pub fn seg_statistics<B: Backend>(logits: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    let [b, c, h, w] = logits.dims();
    let flat = |t: Tensor<B, 4>| t.narrow(1, 1, c - 1).swap_dims(0, 1).reshape([c - 1, b * h * w]);
    let p = flat(softmax(logits.clone(), 1));
    let g = flat(target.clone());
    let inter = (p.clone() * g.clone()).sum_dim(1).reshape([c - 1]);
    let psq = p.powi_scalar(2).sum_dim(1).reshape([c - 1]);
    let gsq = g.powi_scalar(2).sum_dim(1).reshape([c - 1]);
    let ce = (log_softmax(logits, 1) * target).sum().neg().reshape([1]);
    Tensor::cat(vec![inter, psq, gsq, ce], 0)
}

/// [`seg_loss`] of a batch of `pixels` pixels (images x H x W) and `classes` classes from its
/// [`seg_statistics`] summed over all its parts.
pub fn seg_combine<B: Backend>(
    stats: Tensor<B, 1>,
    classes: usize,
    pixels: usize,
    dice_w: f64,
    ce_w: f64,
) -> Tensor<B, 1> {
    let f = classes - 1;
    let inter = stats.clone().narrow(0, 0, f);
    let denom = stats.clone().narrow(0, f, f) + stats.clone().narrow(0, 2 * f, f);
    let ce = stats.narrow(0, 3 * f, 1).div_scalar(pixels as f64);
    let dice = (inter * 2.0 + 1e-5) / (denom + 1e-5);
    (dice.neg() + 1.0).sum().div_scalar(classes as f64) * dice_w + ce * ce_w
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn summed_statistics_of_the_parts_give_the_whole_batchs_loss() {
        let dev = Default::default();
        let (b, c, h, w) = (3, 3, 4, 5);
        let labels: Vec<u8> = (0..b * h * w).map(|i| ((i * 7) % 11 % 3) as u8).collect();
        let target = one_hot::<Flex>(&labels, b, c, h, w, &dev);
        let values: Vec<f32> = (0..b * c * h * w).map(|i| ((i * 37) % 17) as f32 / 5.0 - 1.5).collect();
        let logits = Tensor::<Flex, 4>::from_data(TensorData::new(values, [b, c, h, w]), &dev);
        let whole: f32 = seg_loss(logits.clone(), target.clone(), 0.4, 0.6).into_scalar();
        let parts = seg_statistics(logits.clone().narrow(0, 0, 1), target.clone().narrow(0, 0, 1))
            + seg_statistics(logits.narrow(0, 1, 2), target.narrow(0, 1, 2));
        let combined: f32 = seg_combine(parts, c, b * h * w, 0.4, 0.6).into_scalar();
        assert!((whole - combined).abs() < 1e-5 * whole.abs(), "{whole} vs {combined}");
        assert!(whole > 0.1);
    }

    #[test]
    fn perfect_logits_give_small_losses_and_wrong_give_large() {
        let dev = Default::default();
        let labels = [0u8, 1, 1, 0];
        let target = one_hot::<Flex>(&labels, 1, 2, 2, 2, &dev);
        let good = target.clone() * 20.0;
        let bad = (target.clone().neg() + 1.0) * 20.0;
        let ce_good: f32 = cross_entropy(good.clone(), target.clone()).into_scalar();
        let ce_bad: f32 = cross_entropy(bad.clone(), target.clone()).into_scalar();
        assert!(ce_good < 1e-6 && ce_bad > 10.0);
        let d_good: f32 = dice_loss(good, target.clone()).into_scalar();
        let d_bad: f32 = dice_loss(bad, target).into_scalar();
        assert!(d_good < 1e-5, "{d_good}");
        // one foreground class of two: the divisor is C = 2
        assert!((d_bad - 0.5).abs() < 1e-4, "{d_bad}");
    }
}
