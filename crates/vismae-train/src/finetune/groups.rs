//! Learning-rate groups of fine-tuning, by official parameter key: the encoder (`patch_embed`,
//! `layers.*`, the position embedding, the classifier's final `norm`) can learn more slowly than
//! the new decoder or head (`encoder_lr_scale`), with layer-wise decay on top (`layer_decay`, as
//! BEiT/MAE/SimMIM fine-tune Swin: block `j` of stage `i` is layer `sum(depths[..i]) + j + 1`, the
//! patch embedding layer 0, a stage's patch merging the stage's last block, and layer `l` learns
//! at `layer_decay^(L + 1 - l)` with `L` blocks; the rest at 1), or be frozen (`freeze_encoder`:
//! a linear probe for classification). Every step splits the gradients into one set per distinct
//! scale and takes one AdamW step per set with the scaled learning rate (decoupled weight decay
//! scales with it, as in PyTorch's parameter groups); a frozen tensor gets no step at all.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use vismae_model::params::{Buffer, ParamIo, TorchLayout};
use vismae_model::weights::Visit;

/// How the learning rate differs between parts of the network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrGroups {
    /// Multiplier of every encoder tensor's learning rate.
    pub encoder_lr_scale: f64,
    /// Layer-wise decay of the encoder (1: none).
    pub layer_decay: f64,
    /// Leave the encoder as initialised.
    pub freeze_encoder: bool,
}

impl Default for LrGroups {
    fn default() -> Self {
        LrGroups { encoder_lr_scale: 1.0, layer_decay: 1.0, freeze_encoder: false }
    }
}

impl LrGroups {
    /// Whether every tensor learns at the scheduled rate.
    pub fn is_uniform(&self) -> bool {
        self.encoder_lr_scale == 1.0 && self.layer_decay == 1.0 && !self.freeze_encoder
    }
}

/// Whether `key` belongs to the encoder.
pub fn is_encoder(key: &str) -> bool {
    ["patch_embed.", "layers.", "norm."].iter().any(|p| key.starts_with(p))
        || ["pos_embed", "absolute_pos_embed", "mask_token"].contains(&key)
}

/// The layer index of an encoder key (see the module text); `None` for keys outside the encoder.
pub fn layer_id(key: &str, depths: &[usize]) -> Option<usize> {
    if !is_encoder(key) {
        return None;
    }
    let total: usize = depths.iter().sum();
    if let Some(rest) = key.strip_prefix("layers.") {
        let mut parts = rest.split('.');
        let stage: usize = parts.next()?.parse().ok()?;
        let before: usize = depths.iter().take(stage).sum();
        return match parts.next()? {
            "blocks" => Some(before + parts.next()?.parse::<usize>().ok()? + 1),
            _ => Some(depths.iter().take(stage + 1).sum()),
        };
    }
    if key.starts_with("norm.") {
        return Some(total + 1);
    }
    Some(0)
}

/// The learning-rate multiplier of `key` (0: frozen).
pub fn scale(key: &str, depths: &[usize], g: &LrGroups) -> f64 {
    match layer_id(key, depths) {
        None => 1.0,
        Some(_) if g.freeze_encoder => 0.0,
        Some(l) => {
            let total: usize = depths.iter().sum();
            g.encoder_lr_scale * g.layer_decay.powi((total + 1).saturating_sub(l) as i32)
        }
    }
}

/// The stage depths a network's keys imply (`layers.{i}.blocks.{j}`).
struct Depths(BTreeMap<usize, usize>);

impl<B: Backend> ParamIo<B> for Depths {
    fn param<const D: usize>(&mut self, key: &str, p: Param<Tensor<B, D>>, _: TorchLayout) -> Param<Tensor<B, D>> {
        let mut parts = key.split('.');
        if parts.next() == Some("layers")
            && let Some(Ok(stage)) = parts.next().map(str::parse::<usize>)
            && parts.next() == Some("blocks")
            && let Some(Ok(block)) = parts.next().map(str::parse::<usize>)
        {
            let d = self.0.entry(stage).or_default();
            *d = (*d).max(block + 1);
        }
        p
    }

    fn buffer(&mut self, _: &str, _: Vec<usize>, _: impl FnOnce() -> Buffer) {}
}

/// The encoder stage depths of `model`.
pub fn depths<B: Backend, M: Visit<B>>(model: M) -> (M, Vec<usize>) {
    let mut d = Depths(BTreeMap::new());
    let model = model.visit_params(&mut d);
    let n = d.0.keys().next_back().map_or(0, |k| k + 1);
    (model, (0..n).map(|s| d.0.get(&s).copied().unwrap_or(0)).collect())
}

/// Splits gradients by scale.
struct Split<'a, B: AutodiffBackend> {
    all: &'a mut GradientsParams,
    depths: &'a [usize],
    groups: &'a LrGroups,
    out: BTreeMap<u64, (f64, GradientsParams)>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ParamIo<B> for Split<'_, B> {
    fn param<const D: usize>(&mut self, key: &str, p: Param<Tensor<B, D>>, _: TorchLayout) -> Param<Tensor<B, D>> {
        if let Some(g) = self.all.remove::<B::InnerBackend, D>(p.id) {
            let s = scale(key, self.depths, self.groups);
            if s > 0.0 {
                self.out.entry(s.to_bits()).or_insert_with(|| (s, GradientsParams::new())).1.register(p.id, g);
            }
        }
        p
    }

    fn buffer(&mut self, _: &str, _: Vec<usize>, _: impl FnOnce() -> Buffer) {}
}

/// `grads` split into (scale, gradients) sets, largest scale first; tensors of scale 0 are left out.
pub fn split<B: AutodiffBackend, M: Visit<B>>(
    model: M,
    mut grads: GradientsParams,
    depths: &[usize],
    groups: &LrGroups,
) -> (M, Vec<(f64, GradientsParams)>) {
    let mut s = Split::<B> { all: &mut grads, depths, groups, out: BTreeMap::new(), _b: std::marker::PhantomData };
    let model = model.visit_params(&mut s);
    let mut sets: Vec<(f64, GradientsParams)> = s.out.into_values().collect();
    sets.sort_by(|a, b| b.0.total_cmp(&a.0));
    (model, sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swin_layer_ids_and_scales_follow_simmim() {
        let depths = [2, 2, 6, 2];
        assert_eq!(layer_id("patch_embed.proj.weight", &depths), Some(0));
        assert_eq!(layer_id("layers.0.blocks.0.attn.qkv.weight", &depths), Some(1));
        assert_eq!(layer_id("layers.2.blocks.5.mlp.fc1.weight", &depths), Some(10));
        assert_eq!(layer_id("layers.2.downsample.reduction.weight", &depths), Some(10));
        assert_eq!(layer_id("layers.3.blocks.1.norm1.weight", &depths), Some(12));
        assert_eq!(layer_id("norm.weight", &depths), Some(13));
        assert_eq!(layer_id("head.weight", &depths), None);
        assert_eq!(layer_id("layers_up.0.blocks.0.attn.qkv.weight", &depths), None);
        let g = LrGroups { encoder_lr_scale: 0.5, layer_decay: 0.9, freeze_encoder: false };
        assert!((scale("patch_embed.proj.weight", &depths, &g) - 0.5 * 0.9f64.powi(13)).abs() < 1e-15);
        assert!((scale("layers.3.blocks.1.norm1.weight", &depths, &g) - 0.5 * 0.9).abs() < 1e-15);
        assert_eq!(scale("norm.weight", &depths, &g), 0.5);
        assert_eq!(scale("head.bias", &depths, &g), 1.0);
        let frozen = LrGroups { freeze_encoder: true, ..Default::default() };
        assert_eq!(
            (scale("layers.0.blocks.0.attn.qkv.weight", &depths, &frozen), scale("head.bias", &depths, &frozen)),
            (0.0, 1.0)
        );
    }
}
