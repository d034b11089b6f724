//! The segmentation Swin-UNet (SPEC §3, `swin_unet.py::SwinUnet`): encoder, bottleneck expansion,
//! skip concatenation + 1x1 reduction, decoder, final x4 expansion and a 1x1 head.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};

use crate::backbone::{SwinDecoder, SwinEncoder};
use crate::config::UnetConfig;
use crate::geometry::{cached_rows, expand_to_images_index, gather_rows};
use crate::layers::{Init, PatchExpanding, new_conv_linear};
use crate::params::{self, ParamIo};

/// Tokens per chunk of the final expansion: 256 tokens expand to 4,096 pixels of 96 values (1.5 MiB).
const FINAL_CHUNK_TOKENS: usize = 256;

/// The segmentation network.
#[derive(Module, Debug)]
pub struct SwinUnet<B: Backend> {
    /// Patch embedding and encoder stages.
    pub encoder: SwinEncoder<B>,
    /// The up path with skip reductions.
    pub decoder: SwinDecoder<B>,
    /// x4 expansion back to pixels, keeping the embedding width.
    pub final_patch_expanding: PatchExpanding<B>,
    /// 1x1 convolution `embed -> classes`, no bias.
    pub head: Linear<B>,
    patch: usize,
}

impl UnetConfig {
    /// A freshly initialised Swin-UNet (truncated-normal Linear layers, as the reference).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwinUnet<B> {
        let c = &self.swin;
        SwinUnet {
            encoder: SwinEncoder::new(c, Init::TruncNormal, device),
            decoder: SwinDecoder::new(c, true, Init::TruncNormal, device),
            final_patch_expanding: PatchExpanding::new(
                c.embed_dim,
                c.patch_size,
                c.layer_norm_eps,
                Init::TruncNormal,
                device,
            ),
            head: new_conv_linear(c.embed_dim, self.num_classes, false, device),
            patch: c.patch_size,
        }
    }
}

impl<B: Backend> SwinUnet<B> {
    /// Per-pixel class logits.
    ///
    /// # Shapes
    /// `[B, C, H, W]` -> `[B, classes, H, W]`
    pub fn forward(&self, img: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = img.dims();
        let x = self.encoder.embed(img);
        let (x, skips) = self.encoder.stages(x);
        let x = self.decoder.forward(x, Some(&skips));
        // expansion, LayerNorm and the 1x1 head are row-wise, so the pixel shuffle, the crop to the
        // input size and the channels-first permute wait for the K logits and run as one gather.
        // Tokens go in chunks, so that the f*f times larger expansion stays in cache.
        let [b, gh, gw, c] = x.dims();
        let f = self.final_patch_expanding.factor();
        let (n, rows) = (b * gh * gw, x.reshape([b * gh * gw, c]));
        let mut parts: Vec<Tensor<B, 2>> = (0..n)
            .step_by(FINAL_CHUNK_TOKENS)
            .map(|s| {
                let chunk = rows.clone().narrow(0, s, FINAL_CHUNK_TOKENS.min(n - s));
                self.head.forward(self.final_patch_expanding.forward_unshuffled(chunk))
            })
            .collect();
        let logits = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(parts, 0) }; // [B*gh*gw*f*f, K]
        let k = logits.dims()[1];
        let index =
            cached_rows("unshuffle", &[b, gh, gw, f, k, h, w], || expand_to_images_index(b, gh, gw, f, k, (h, w)));
        let n = logits.shape().num_elements();
        gather_rows(logits.reshape([n, 1]), &index).reshape([b, k, h, w])
    }

    /// The side multiple an input must have (the patch size).
    pub fn patch_size(&self) -> usize {
        self.patch
    }

    /// Visits the parameters under the official `SwinUnet` keys.
    pub fn visit(mut self, v: &mut impl ParamIo<B>) -> Self {
        self.encoder = self.encoder.visit(v);
        self.decoder = self.decoder.visit(v);
        self.final_patch_expanding = self.final_patch_expanding.visit("final_patch_expanding", v);
        let [e, k] = self.head.weight.val().dims();
        self.head = params::linear_as(v, "head", self.head, Some(vec![k, e, 1, 1]));
        self
    }
}
