//! The Swin encoder (patch embedding + stages) and the up-path decoder shared by the MAE and the
//! Swin-UNet (SPEC §2.1, §3). Neither has a final encoder LayerNorm, as in the reference.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, backend::Backend};

use crate::block::{BasicLayer, BasicLayerUp};
use crate::config::SwinConfig;
use crate::layers::{Init, PatchEmbed, PatchExpanding, layer_norm, new_conv_linear, new_layer_norm, on_rows};
use crate::params::{self, ParamIo};

/// Patch embedding and the encoder stages (`patch_embed.*`, `layers.*`).
#[derive(Module, Debug)]
pub struct SwinEncoder<B: Backend> {
    /// Patch embedding.
    pub patch_embed: PatchEmbed<B>,
    /// Encoder stages.
    pub layers: Vec<BasicLayer<B>>,
}

impl<B: Backend> SwinEncoder<B> {
    /// New encoder for `cfg`.
    pub fn new(cfg: &SwinConfig, init: Init, device: &B::Device) -> Self {
        Self {
            patch_embed: PatchEmbed::new(cfg.in_chans, cfg.patch_size, cfg.embed_dim, cfg.layer_norm_eps, device),
            layers: (0..cfg.num_stages()).map(|s| BasicLayer::new(cfg, s, init, device)).collect(),
        }
    }

    /// # Shapes
    /// `[B, C, H, W]` -> `[B, H/p, W/p, embed]`
    pub fn embed(&self, img: Tensor<B, 4>) -> Tensor<B, 4> {
        self.patch_embed.forward(img)
    }

    /// Runs the stages and returns the bottleneck and each stage's input (the U-Net skips).
    ///
    /// # Shapes
    /// `[B, h, w, E]` -> `[B, h/2^(n-1), w/2^(n-1), 2^(n-1) E]`, skips `[B, h/2^s, w/2^s, 2^s E]`
    pub fn stages(&self, mut x: Tensor<B, 4>) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut skips = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            skips.push(x.clone());
            x = layer.forward(x);
        }
        (x, skips)
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, v: &mut impl ParamIo<B>) -> Self {
        self.patch_embed = self.patch_embed.visit("patch_embed", v);
        self.layers = self.layers.into_iter().enumerate().map(|(s, l)| l.visit(&format!("layers.{s}"), v)).collect();
        self
    }
}

/// The up path: `first_patch_expanding`, `layers_up.*`, optional `skip_connection_layers.*`
/// (Swin-UNet only) and `norm_up`.
#[derive(Module, Debug)]
pub struct SwinDecoder<B: Backend> {
    /// x2 expansion of the bottleneck.
    pub first_patch_expanding: PatchExpanding<B>,
    /// 1x1 convolutions `2d -> d` after each skip concatenation (empty in the MAE).
    pub skip_connection_layers: Vec<Linear<B>>,
    /// Decoder stages, deepest first.
    pub layers_up: Vec<BasicLayerUp<B>>,
    /// Final LayerNorm over the embedding width.
    pub norm_up: LayerNorm<B>,
}

impl<B: Backend> SwinDecoder<B> {
    /// New decoder mirroring the encoder of `cfg`; `skips` adds the U-Net skip reductions.
    pub fn new(cfg: &SwinConfig, skips: bool, init: Init, device: &B::Device) -> Self {
        let n = cfg.num_stages();
        let eps = cfg.layer_norm_eps;
        let mirrored = |k: usize| n - 2 - k;
        Self {
            first_patch_expanding: PatchExpanding::new(cfg.bottleneck_dim(), 2, eps, init, device),
            skip_connection_layers: if skips {
                (0..n - 1)
                    .map(|k| {
                        let d = cfg.stage_dim(mirrored(k));
                        new_conv_linear(2 * d, d, true, device)
                    })
                    .collect()
            } else {
                Vec::new()
            },
            layers_up: (0..n - 1).map(|k| BasicLayerUp::new(cfg, mirrored(k), k + 2 < n, init, device)).collect(),
            norm_up: new_layer_norm(cfg.embed_dim, eps, device),
        }
    }

    /// Runs the up path; with `skips` (the encoder's stage inputs) each stage first concatenates the
    /// matching skip and reduces it. An expanded map larger than its skip (odd sizes) is cropped.
    ///
    /// # Shapes
    /// `[B, h, w, 2^(n-1) E]` -> `[B, 2^(n-1) h, 2^(n-1) w, E]`
    pub fn forward(&self, x: Tensor<B, 4>, skips: Option<&[Tensor<B, 4>]>) -> Tensor<B, 4> {
        let mut x = self.first_patch_expanding.forward(x);
        let n = self.layers_up.len() + 1;
        for (k, layer) in self.layers_up.iter().enumerate() {
            if let (Some(skips), Some(reduce)) = (skips, self.skip_connection_layers.get(k)) {
                let skip = skips[n - 2 - k].clone();
                let [_, sh, sw, _] = skip.dims();
                let [_, h, w, _] = x.dims();
                if h != sh || w != sw {
                    x = x.narrow(1, 0, sh.min(h)).narrow(2, 0, sw.min(w));
                }
                x = on_rows(Tensor::cat(vec![x, skip], 3), |r| reduce.forward(r));
            }
            x = layer.forward(x);
        }
        layer_norm(&self.norm_up, x)
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, v: &mut impl ParamIo<B>) -> Self {
        self.first_patch_expanding = self.first_patch_expanding.visit("first_patch_expanding", v);
        self.skip_connection_layers = self
            .skip_connection_layers
            .into_iter()
            .enumerate()
            .map(|(k, l)| {
                let [d2, d] = l.weight.val().dims();
                params::linear_as(v, &format!("skip_connection_layers.{k}"), l, Some(vec![d, d2, 1, 1]))
            })
            .collect();
        self.layers_up =
            self.layers_up.into_iter().enumerate().map(|(k, l)| l.visit(&format!("layers_up.{k}"), v)).collect();
        self.norm_up = params::layer_norm(v, "norm_up", self.norm_up);
        self
    }
}
