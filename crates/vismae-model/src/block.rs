//! The pre-norm Swin block and the encoder/decoder stages that stack them (SPEC §1.2, §2.1):
//! `x + DropPath(Attn(LN(x)))`, `x + DropPath(MLP(LN(x)))`, block `i` shifted iff `i` is odd.

use burn::module::Module;
use burn::nn::LayerNorm;
use burn::tensor::{Tensor, backend::Backend};

use crate::attention::WindowAttention;
use crate::config::SwinConfig;
use crate::layers::{Init, Mlp, PatchExpanding, PatchMerging, drop_path, layer_norm, new_layer_norm};
use crate::params::{self, ParamIo, join};

/// One Swin Transformer block.
#[derive(Module, Debug)]
pub struct SwinBlock<B: Backend> {
    /// LayerNorm before attention.
    pub norm1: LayerNorm<B>,
    /// Window attention.
    pub attn: WindowAttention<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// The MLP.
    pub mlp: Mlp<B>,
    shift: bool,
    drop_path: f64,
}

impl<B: Backend> SwinBlock<B> {
    /// # Shapes
    /// `[B, H, W, C]` -> `[B, H, W, C]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.attn.forward(layer_norm(&self.norm1, x.clone()), self.shift);
        let x = x + drop_path(y, self.drop_path);
        let y = self.mlp.forward(layer_norm(&self.norm2, x.clone()));
        x + drop_path(y, self.drop_path)
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        self.norm1 = params::layer_norm(v, &join(prefix, "norm1"), self.norm1);
        self.attn = self.attn.visit(&join(prefix, "attn"), v);
        self.norm2 = params::layer_norm(v, &join(prefix, "norm2"), self.norm2);
        self.mlp = self.mlp.visit(&join(prefix, "mlp"), v);
        self
    }
}

/// Builds the blocks of stage `stage` of `cfg` (width, heads, depth and drop-path rates of that
/// stage); the decoder stage mirroring an encoder stage uses the same call.
pub fn stage_blocks<B: Backend>(cfg: &SwinConfig, stage: usize, init: Init, device: &B::Device) -> Vec<SwinBlock<B>> {
    let dim = cfg.stage_dim(stage);
    let heads = cfg.num_heads[stage];
    cfg.stage_drop_path(stage)
        .into_iter()
        .enumerate()
        .map(|(i, rate)| SwinBlock {
            norm1: new_layer_norm(dim, cfg.layer_norm_eps, device),
            attn: WindowAttention::new(dim, heads, cfg.window_size, cfg.qkv_bias, init, device),
            norm2: new_layer_norm(dim, cfg.layer_norm_eps, device),
            mlp: Mlp::new(dim, dim * cfg.mlp_ratio, init, device),
            shift: i % 2 == 1,
            drop_path: rate,
        })
        .collect()
}

fn run_blocks<B: Backend>(blocks: &[SwinBlock<B>], mut x: Tensor<B, 4>) -> Tensor<B, 4> {
    for block in blocks {
        x = block.forward(x);
    }
    x
}

fn visit_blocks<B: Backend>(blocks: Vec<SwinBlock<B>>, prefix: &str, v: &mut impl ParamIo<B>) -> Vec<SwinBlock<B>> {
    blocks.into_iter().enumerate().map(|(i, b)| b.visit(&join(prefix, &format!("blocks.{i}")), v)).collect()
}

/// An encoder stage (`layers.{s}`): blocks, then patch merging except in the last stage.
#[derive(Module, Debug)]
pub struct BasicLayer<B: Backend> {
    /// The Swin blocks.
    pub blocks: Vec<SwinBlock<B>>,
    /// Downsampling at the end of the stage.
    pub downsample: Option<PatchMerging<B>>,
}

impl<B: Backend> BasicLayer<B> {
    /// Encoder stage `stage` of `cfg`.
    pub fn new(cfg: &SwinConfig, stage: usize, init: Init, device: &B::Device) -> Self {
        let last = stage + 1 == cfg.num_stages();
        Self {
            blocks: stage_blocks(cfg, stage, init, device),
            downsample: (!last).then(|| PatchMerging::new(cfg.stage_dim(stage), cfg.layer_norm_eps, init, device)),
        }
    }

    /// # Shapes
    /// `[B, H, W, C]` -> `[B, H/2, W/2, 2C]` (last stage: unchanged)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = run_blocks(&self.blocks, x);
        match &self.downsample {
            Some(d) => d.forward(x),
            None => x,
        }
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        self.blocks = visit_blocks(self.blocks, prefix, v);
        self.downsample = self.downsample.map(|d| d.visit(&join(prefix, "downsample"), v));
        self
    }
}

/// A decoder stage (`layers_up.{k}`): blocks, then patch expanding except in the last stage.
#[derive(Module, Debug)]
pub struct BasicLayerUp<B: Backend> {
    /// The Swin blocks.
    pub blocks: Vec<SwinBlock<B>>,
    /// Upsampling at the end of the stage.
    pub upsample: Option<PatchExpanding<B>>,
}

impl<B: Backend> BasicLayerUp<B> {
    /// Decoder stage mirroring encoder stage `stage`; `upsample` adds a x2 expansion at the end.
    pub fn new(cfg: &SwinConfig, stage: usize, upsample: bool, init: Init, device: &B::Device) -> Self {
        Self {
            blocks: stage_blocks(cfg, stage, init, device),
            upsample: upsample.then(|| PatchExpanding::new(cfg.stage_dim(stage), 2, cfg.layer_norm_eps, init, device)),
        }
    }

    /// # Shapes
    /// `[B, H, W, C]` -> `[B, 2H, 2W, C/2]` (last stage: unchanged)
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = run_blocks(&self.blocks, x);
        match &self.upsample {
            Some(u) => u.forward(x),
            None => x,
        }
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        self.blocks = visit_blocks(self.blocks, prefix, v);
        self.upsample = self.upsample.map(|u| u.visit(&join(prefix, "upsample"), v));
        self
    }
}
