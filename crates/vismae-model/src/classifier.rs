//! The Swin classifier (SPEC §4, `swin_class.py::SwinClass`): encoder, LayerNorm, global average
//! pooling and a linear head. Unlike the reference, inputs need not be 224: attention pads.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, backend::Backend};

use crate::backbone::SwinEncoder;
use crate::config::ClassifierConfig;
use crate::layers::{Init, new_layer_norm, new_linear};
use crate::params::{self, ParamIo};

/// The classification network; its logits feed softmax (multi-class) or sigmoid (multi-label).
#[derive(Module, Debug)]
pub struct SwinClassifier<B: Backend> {
    /// Patch embedding and encoder stages.
    pub encoder: SwinEncoder<B>,
    /// LayerNorm over the bottleneck width.
    pub norm: LayerNorm<B>,
    /// Linear `bottleneck -> classes`.
    pub head: Linear<B>,
}

impl ClassifierConfig {
    /// A freshly initialised classifier (truncated-normal Linear layers, as the reference).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwinClassifier<B> {
        let c = &self.swin;
        let d = c.bottleneck_dim();
        SwinClassifier {
            encoder: SwinEncoder::new(c, Init::TruncNormal, device),
            norm: new_layer_norm(d, c.layer_norm_eps, device),
            head: new_linear(d, self.num_classes, true, Init::TruncNormal, device),
        }
    }
}

impl<B: Backend> SwinClassifier<B> {
    /// Class logits.
    ///
    /// # Shapes
    /// `[B, C, H, W]` -> `[B, classes]`
    pub fn forward(&self, img: Tensor<B, 4>) -> Tensor<B, 2> {
        let (x, _) = self.encoder.stages(self.encoder.embed(img));
        let x = crate::layers::layer_norm(&self.norm, x); // [B, h, w, D]
        let [b, h, w, d] = x.dims();
        let pooled = x.reshape([b, h * w, d]).mean_dim(1).reshape([b, d]);
        self.head.forward(pooled)
    }

    /// Visits the parameters under the official `SwinClass` keys.
    pub fn visit(mut self, v: &mut impl ParamIo<B>) -> Self {
        self.encoder = self.encoder.visit(v);
        self.norm = params::layer_norm(v, "norm", self.norm);
        self.head = params::linear(v, "head", self.head);
        self
    }
}
