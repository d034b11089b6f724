//! The SimCLR network of the paper's baseline (SimCLR pre-trained with the same Swin encoder; paper
//! §3.2): the classifier's encoder and final LayerNorm, global average pooling, and a projection
//! head MLP (SimCLR v1: `Linear -> ReLU -> Linear`; v2's 3 layers with `projection_layers = 3`),
//! whose normalised output feeds the NT-Xent loss. The head carries no BatchNorm (SimCLR v2 has
//! one), so the loss of a batch does not depend on how data-parallel replicas split it.
//!
//! Keys: the encoder and `norm.*` as the classifier's (so fine-tuning loads them by name),
//! the head under `projection.{k}.*`.

use burn::module::Module;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::backbone::SwinEncoder;
use crate::config::SwinConfig;
use crate::layers::{Init, new_layer_norm, new_linear};
use crate::params::{self, ParamIo};

/// The SimCLR network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimClrConfig {
    /// Backbone hyper-parameters (the classifier's depths).
    pub swin: SwinConfig,
    /// Linear layers of the projection head (2 or 3).
    pub projection_layers: usize,
    /// Width of the head's hidden layers (the bottleneck width in SimCLR).
    pub projection_hidden: usize,
    /// Output width (128 in SimCLR).
    pub projection_dim: usize,
}

/// Encoder, norm, pooling and projection head.
#[derive(Module, Debug)]
pub struct SimClr<B: Backend> {
    /// Patch embedding and encoder stages.
    pub encoder: SwinEncoder<B>,
    /// LayerNorm over the bottleneck width.
    pub norm: LayerNorm<B>,
    /// The projection head's Linear layers (ReLU between them).
    pub projection: Vec<Linear<B>>,
}

impl SimClrConfig {
    /// A freshly initialised network (truncated-normal Linear layers, as the classifier's).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SimClr<B> {
        let c = &self.swin;
        let d = c.bottleneck_dim();
        let n = self.projection_layers.max(2);
        let widths: Vec<usize> = std::iter::once(d)
            .chain(std::iter::repeat_n(self.projection_hidden, n - 1))
            .chain([self.projection_dim])
            .collect();
        SimClr {
            encoder: SwinEncoder::new(c, Init::TruncNormal, device),
            norm: new_layer_norm(d, c.layer_norm_eps, device),
            projection: widths.windows(2).map(|w| new_linear(w[0], w[1], true, Init::TruncNormal, device)).collect(),
        }
    }
}

impl<B: Backend> SimClr<B> {
    /// Pooled features `h` and projections `z` (not yet normalised).
    ///
    /// # Shapes
    /// `[B, C, H, W]` -> (`[B, D]`, `[B, projection_dim]`)
    pub fn forward(&self, img: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let (x, _) = self.encoder.stages(self.encoder.embed(img));
        let x = crate::layers::layer_norm(&self.norm, x); // [B, h, w, D]
        let [b, h, w, d] = x.dims();
        let pooled = x.reshape([b, h * w, d]).mean_dim(1).reshape([b, d]);
        let last = self.projection.len().saturating_sub(1);
        let mut z = pooled.clone();
        for (k, l) in self.projection.iter().enumerate() {
            z = l.forward(z);
            if k < last {
                z = relu(z);
            }
        }
        (pooled, z)
    }

    /// Visits the parameters: the classifier's encoder and norm keys, then `projection.{k}`.
    pub fn visit(mut self, v: &mut impl ParamIo<B>) -> Self {
        self.encoder = self.encoder.visit(v);
        self.norm = params::layer_norm(v, "norm", self.norm);
        self.projection = self
            .projection
            .into_iter()
            .enumerate()
            .map(|(k, l)| params::linear(v, &format!("projection.{k}"), l))
            .collect();
        self
    }
}

/// The NT-Xent loss (SimCLR, "normalized temperature-scaled cross entropy") of `2N` projections
/// `z` laid out as `[view 1 of images 0..N; view 2 of images 0..N]`: each is normalised to unit
/// length, `sim = z zᵀ / τ` with the diagonal left out, and row `i` is a softmax cross-entropy whose
/// target is its other view (`i ± N`); the mean over the `2N` rows.
///
/// # Shapes
/// `z [2N, D]` -> `[1]`
pub fn nt_xent<B: Backend>(z: Tensor<B, 2>, temperature: f64) -> Tensor<B, 1> {
    let [m, _] = z.dims();
    let n = m / 2;
    let device = z.device();
    let norm = (z.clone().powi_scalar(2).sum_dim(1) + 1e-12).sqrt(); // [2N, 1]
    let z = z / norm;
    let sim = z.clone().matmul(z.transpose()) / temperature; // [2N, 2N]
    let mut eye = vec![0f32; m * m];
    let mut pos = vec![0f32; m * m];
    for i in 0..m {
        eye[i * m + i] = 1.0;
        pos[i * m + (i + n) % m] = 1.0;
    }
    let eye = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(eye, [m, m]), &device);
    let pos = Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(pos, [m, m]), &device);
    // a large negative on the diagonal takes each row's self-similarity out of its softmax
    let logits = sim - eye * 1e9;
    let logp = burn::tensor::activation::log_softmax(logits, 1);
    (logp * pos).sum().neg() / m as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;

    /// NT-Xent of 2 images x 2 views in 2-D, by hand: the unit vectors
    /// z = [(1, 0), (0.6, 0.8), (0.8, 0.6), (0, 1)] (rows 0, 1 are view 1 of images 0, 1; rows 2, 3
    /// view 2), τ = 0.5. Row 0: sims to rows 1, 2, 3 are 0.6, 0.8, 0 -> /τ 1.2, 1.6, 0; target
    /// row 2: -1.6 + ln(e^1.2 + e^1.6 + e^0). Likewise for the others; the mean of the four.
    #[test]
    fn nt_xent_equals_the_hand_computed_value() {
        let device = Default::default();
        let z = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], &device);
        // rows: 0 -> target 2 (sim .8), 1 -> target 3 (.8), 2 -> target 0 (.8), 3 -> target 1 (.8)
        // row 0 others: .6, .8, 0; row 1: .6, .96, .8; row 2: .8, .96, .6; row 3: 0, .8, .6
        let row = |sims: [f64; 3], target: f64| -> f64 {
            -target / 0.5 + sims.iter().map(|s| (s / 0.5).exp()).sum::<f64>().ln()
        };
        let want = (row([0.6, 0.8, 0.0], 0.8)
            + row([0.6, 0.96, 0.8], 0.8)
            + row([0.8, 0.96, 0.6], 0.8)
            + row([0.0, 0.8, 0.6], 0.8))
            / 4.0;
        // the same sums in Python: 0.8707137570568937
        assert!((want - 0.870_713_757_056_893_7).abs() < 1e-12, "{want}");
        let got: f32 = nt_xent(z.clone(), 0.5).into_scalar();
        assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");
        // scaling a projection changes nothing (they are normalised)
        let scaled =
            z * Tensor::<B, 2>::from_floats([[2.0, 2.0], [1.0, 1.0], [0.5, 0.5], [3.0, 3.0]], &Default::default());
        let again: f32 = nt_xent(scaled, 0.5).into_scalar();
        assert!((again - got).abs() < 1e-5);
    }
}
