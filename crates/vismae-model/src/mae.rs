//! The window-masked Swin MAE used for pre-training (SPEC §2, `swin_mae.py`): patch embedding,
//! mask-token substitution after the embedding norm, the full encoder over all tokens, the up-path
//! decoder without skips, a per-token pixel prediction and MSE over masked tokens only.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};

use crate::ModelError;
use crate::backbone::{SwinDecoder, SwinEncoder};
use crate::config::MaeConfig;
use crate::layers::{Init, new_linear};
use crate::masking::{MaskGeometry, MaskPlan, plan_from_seed};
use crate::params::{self, Buffer, ParamIo, TorchLayout};

/// Image side the reference builds `pos_embed` for (it is saved but never used).
pub const REFERENCE_IMG_SIZE: usize = 224;

/// What one MAE forward pass returns.
#[derive(Debug, Clone)]
pub struct MaeOutput<B: Backend> {
    /// Mean of the per-token MSE over masked tokens of the whole batch, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Predicted pixels per token, `[B, L, p * p * C]` in (row, column, channel) order.
    pub pred: Tensor<B, 3>,
    /// `[B, L]`, 1 = masked.
    pub mask: Tensor<B, 2>,
    /// Encoder output, `[B, h, w, C]` (no final norm).
    pub latent: Tensor<B, 4>,
}

/// The pre-training network.
#[derive(Module, Debug)]
pub struct SwinMae<B: Backend> {
    /// Patch embedding and encoder stages.
    pub encoder: SwinEncoder<B>,
    /// The learned token that replaces masked tokens, `[embed]` (PyTorch `[1, 1, embed]`).
    pub mask_token: Param<Tensor<B, 1>>,
    /// The up path, without skips.
    pub decoder: SwinDecoder<B>,
    /// Linear `embed -> p * p * C`.
    pub decoder_pred: Linear<B>,
    patch: usize,
    in_chans: usize,
    embed_dim: usize,
    mask_unit: usize,
    mask_ratio: f64,
    norm_pix_loss: bool,
}

impl MaeConfig {
    /// A freshly initialised MAE (xavier-uniform Linear layers, as the reference).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwinMae<B> {
        let c = &self.swin;
        let out = c.patch_size * c.patch_size * c.in_chans;
        SwinMae {
            encoder: SwinEncoder::new(c, Init::XavierUniform, device),
            mask_token: Param::from_tensor(Tensor::random([c.embed_dim], Distribution::Normal(0.0, 0.02), device)),
            decoder: SwinDecoder::new(c, false, Init::XavierUniform, device),
            decoder_pred: new_linear(c.embed_dim, out, true, Init::XavierUniform, device),
            patch: c.patch_size,
            in_chans: c.in_chans,
            embed_dim: c.embed_dim,
            mask_unit: self.mask_unit,
            mask_ratio: self.mask_ratio,
            norm_pix_loss: self.norm_pix_loss,
        }
    }
}

impl<B: Backend> SwinMae<B> {
    /// Geometry of the mask for an `h x w` pixel input.
    pub fn mask_geometry(&self, h: usize, w: usize) -> MaskGeometry {
        MaskGeometry {
            grid_h: h.div_ceil(self.patch),
            grid_w: w.div_ceil(self.patch),
            unit: self.mask_unit,
            ratio: self.mask_ratio,
        }
    }

    /// Forward pass with a mask planned from `seed`.
    pub fn forward_seeded(&self, img: Tensor<B, 4>, seed: u64) -> Result<MaeOutput<B>, ModelError> {
        let [b, _, h, w] = img.dims();
        let plan = plan_from_seed(self.mask_geometry(h, w), b, seed)?;
        self.forward(img, &plan)
    }

    /// Forward pass with a given mask plan.
    ///
    /// # Shapes
    /// `img [B, C, H, W]` (H, W multiples of `p * unit`) -> see [`MaeOutput`]
    pub fn forward(&self, img: Tensor<B, 4>, plan: &MaskPlan) -> Result<MaeOutput<B>, ModelError> {
        let [b, c, h, w] = img.dims();
        if c != self.in_chans {
            return Err(ModelError::Input(format!("input has {c} channels, the model expects {}", self.in_chans)));
        }
        let unit_px = self.patch * self.mask_unit;
        if h % unit_px != 0 || w % unit_px != 0 {
            return Err(ModelError::Input(format!("input {h}x{w} is not a multiple of the {unit_px}-pixel mask unit")));
        }
        let (gh, gw) = (h / self.patch, w / self.patch);
        if plan.batch != b || plan.grid_h != gh || plan.grid_w != gw {
            return Err(ModelError::Mask(format!(
                "mask plan is for {} images of {}x{} tokens, input gives {b} of {gh}x{gw}",
                plan.batch, plan.grid_h, plan.grid_w
            )));
        }
        let device = img.device();
        let mask = Tensor::<B, 2>::from_data(TensorData::new(plan.mask.clone(), [b, gh * gw]), &device);

        let x = self.encoder.embed(img.clone()); // [B, gh, gw, E]
        let m = mask.clone().reshape([b, gh, gw, 1]);
        let token = self.mask_token.val().reshape([1, 1, 1, self.embed_dim]);
        let x = x * (m.clone().neg() + 1.0) + token * m; // masked tokens replaced
        let (latent, _) = self.encoder.stages(x);
        let y = self.decoder.forward(latent.clone(), None); // [B, gh, gw, E]
        let pred = crate::layers::on_rows(y, |r| self.decoder_pred.forward(r)).reshape([
            b,
            gh * gw,
            self.patch * self.patch * c,
        ]);

        let loss = self.loss(img, pred.clone(), mask.clone());
        Ok(MaeOutput { loss, pred, mask, latent })
    }

    /// Mean squared error per token over masked tokens (`forward_loss`).
    fn loss(&self, img: Tensor<B, 4>, pred: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
        let mut target = patchify(img, self.patch);
        if self.norm_pix_loss {
            let (var, mean) = target.clone().var_mean(2);
            target = (target - mean) / (var + 1e-6).sqrt();
        }
        let [b, l, _] = pred.dims();
        let per_token = (pred - target).powi_scalar(2).mean_dim(2).reshape([b, l]);
        (per_token * mask.clone()).sum() / mask.sum()
    }

    /// Visits the parameters and buffers under the official `SwinMAE` keys.
    pub fn visit(mut self, v: &mut impl ParamIo<B>) -> Self {
        let grid = REFERENCE_IMG_SIZE / self.patch;
        let e = self.embed_dim;
        v.buffer("pos_embed", vec![1, grid * grid, e], || Buffer::F32(sincos_pos_embed(e, grid)));
        self.mask_token =
            v.param("mask_token", self.mask_token, TorchLayout { shape: vec![1, 1, e], transposed: false });
        self.encoder = self.encoder.visit(v);
        self.decoder = self.decoder.visit(v);
        self.decoder_pred = params::linear(v, "decoder_pred", self.decoder_pred);
        self
    }
}

/// Image to per-token pixel vectors in (row, column, channel) order (`'nchpwq->nhwpqc'`).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, (H/p)(W/p), p * p * C]`
pub fn patchify<B: Backend>(img: Tensor<B, 4>, p: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = img.dims();
    let (gh, gw) = (h / p, w / p);
    img.reshape([b, c, gh, p, gw, p]) // [B, C, h, p, w, q]
        .permute([0, 2, 4, 3, 5, 1]) // [B, h, w, p, q, C]
        .reshape([b, gh * gw, p * p * c])
}

/// Inverse of [`patchify`] for a `gh x gw` token grid.
pub fn unpatchify<B: Backend>(x: Tensor<B, 3>, p: usize, gh: usize, gw: usize, c: usize) -> Tensor<B, 4> {
    let b = x.dims()[0];
    x.reshape([b, gh, gw, p, p, c]) // [B, h, w, p, q, C]
        .permute([0, 5, 1, 3, 2, 4]) // [B, C, h, p, w, q]
        .reshape([b, c, gh * p, gw * p])
}

/// The 2-D sin-cos position embedding of MAE (`get_2d_sincos_pos_embed`), `[grid², dim]` flattened.
/// The first half of each vector encodes the column, the second half the row.
pub fn sincos_pos_embed(dim: usize, grid: usize) -> Vec<f32> {
    let half = dim / 2;
    let quarter = half / 2;
    let omega: Vec<f64> = (0..quarter).map(|i| 1.0 / 10000f64.powf(i as f64 / (half as f64 / 2.0))).collect();
    let mut out = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for pos in [col as f64, row as f64] {
                out.extend(omega.iter().map(|o| (pos * o).sin() as f32));
                out.extend(omega.iter().map(|o| (pos * o).cos() as f32));
            }
        }
    }
    out
}
