//! The small Swin layers: patch embedding, patch merging, patch expanding (x2 and the final x4),
//! the MLP, stochastic depth and the two initialisation schemes of the reference (SPEC §1.1,
//! §1.4-1.8). All tensors are channels-last `[B, H, W, C]`.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Distribution, Tensor, backend::Backend};

use crate::cpu::gelu;

use crate::geometry::{cached_rows, expand_index, gather_rows, merge_index, pad_bottom_right};
use crate::params::{self, ParamIo, join};

/// Weight initialisation of Linear layers (SPEC §1.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// `xavier_uniform_`, bias 0: the MAE.
    XavierUniform,
    /// `trunc_normal_(std = 0.02)`, bias 0: Swin-UNet and classifier.
    TruncNormal,
}

/// Builds a Linear `d_in -> d_out` initialised as the reference does.
pub fn new_linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, init: Init, device: &B::Device) -> Linear<B> {
    let dist = match init {
        Init::XavierUniform => {
            let bound = (6.0 / (d_in + d_out) as f64).sqrt();
            Distribution::Uniform(-bound, bound)
        }
        // trunc_normal_ with bounds +-2 at std 0.02 truncates nothing measurable
        Init::TruncNormal => Distribution::Normal(0.0, 0.02),
    };
    Linear {
        weight: Param::from_tensor(Tensor::random([d_in, d_out], dist, device)),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// Builds a Linear initialised like a PyTorch `Conv2d` default (kaiming-uniform, a = sqrt 5):
/// weight and bias uniform in `+-1/sqrt(fan_in)`.
pub fn new_conv_linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let dist = Distribution::Uniform(-bound, bound);
    Linear {
        weight: Param::from_tensor(Tensor::random([d_in, d_out], dist, device)),
        bias: bias.then(|| Param::from_tensor(Tensor::random([d_out], dist, device))),
    }
}

/// Applies `f` to `x` seen as a matrix of rows over its last dimension (`[N, C]`) and restores
/// the leading dimensions. burn's flex CPU backend runs the row-wise kernels of LayerNorm, softmax
/// and Linear on 2-D tensors markedly faster (broadcasts across the last axis of a 3-D or 4-D
/// tensor take its slow strided path: LayerNorm forward + backward 2.7x, softmax 1.9x, Linear +
/// GELU 1.15x on Swin stage-1 shapes); the values are the same computation.
pub fn on_rows<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let c = dims[D - 1];
    let n = x.shape().num_elements() / c.max(1);
    let y = f(x.reshape([n, c]));
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// LayerNorm over the last dimension, run on rows (see [`on_rows`]).
pub fn layer_norm<B: Backend, const D: usize>(norm: &LayerNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    on_rows(x, |r| norm.forward(r))
}

/// LayerNorm with weight 1 and bias 0.
pub fn new_layer_norm<B: Backend>(dim: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(dim).with_epsilon(eps).init(device)
}

thread_local! {
    /// (seed, calls so far, index of this thread's first sample in the whole batch)
    static STOCHASTIC: std::cell::Cell<Option<(u64, u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with stochastic depth drawn from `seed` instead of the backend's global generator:
/// the draw for sample `j` at the `k`-th drop-path call depends only on `(seed, k, offset + j)`.
/// Results are then the same however a batch is split across threads or devices (`offset` is the
/// chunk's first sample in the whole batch), and a resumed run draws what the original drew.
pub fn with_stochastic_seed<T>(seed: u64, offset: u64, f: impl FnOnce() -> T) -> T {
    let previous = STOCHASTIC.with(|s| s.replace(Some((seed, 0, offset))));
    let out = f();
    STOCHASTIC.with(|s| s.set(previous));
    out
}

fn keep_draws(seed: u64, call: u64, offset: u64, n: usize, keep: f64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    (0..n as u64)
        .map(|j| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (offset + j).wrapping_mul(0xD1B5_4A32_D192_ED03),
            );
            if rng.random::<f64>() < keep { 1.0 } else { 0.0 }
        })
        .collect()
}

/// Stochastic depth: drops whole samples of a residual branch with probability `rate`, only while
/// gradients are tracked (training), scaling the kept ones by `1 / (1 - rate)`. Inside
/// [`with_stochastic_seed`] the draws are seeded; otherwise they come from the backend.
pub fn drop_path<B: Backend>(x: Tensor<B, 4>, rate: f64) -> Tensor<B, 4> {
    if rate <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = 1.0 - rate;
    let b = x.dims()[0];
    let seeded = STOCHASTIC.with(|s| {
        let state = s.get()?;
        s.set(Some((state.0, state.1 + 1, state.2)));
        Some(state)
    });
    let keep_mask = match seeded {
        Some((seed, call, offset)) => {
            let draws = keep_draws(seed, call, offset, b, keep);
            Tensor::<B, 4>::from_data(burn::tensor::TensorData::new(draws, [b, 1, 1, 1]), &x.device())
        }
        None => Tensor::<B, 4>::random([b, 1, 1, 1], Distribution::Bernoulli(keep), &x.device()),
    };
    x.mul(keep_mask).div_scalar(keep)
}

/// `Conv2d(in, embed, k = s = patch)` + LayerNorm, run as a Linear on flattened patches.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    /// Projection `[in * p * p, embed]` (PyTorch `[embed, in, p, p]`).
    pub proj: Linear<B>,
    /// LayerNorm over the embedding.
    pub norm: LayerNorm<B>,
    patch: usize,
    in_chans: usize,
}

impl<B: Backend> PatchEmbed<B> {
    /// New patch embedding with PyTorch's default convolution initialisation.
    pub fn new(in_chans: usize, patch: usize, embed: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            proj: new_conv_linear(in_chans * patch * patch, embed, true, device),
            norm: new_layer_norm(embed, eps, device),
            patch,
            in_chans,
        }
    }

    /// Embeds an image, zero-padding its right and bottom to a multiple of the patch.
    ///
    /// # Shapes
    /// `[B, C, H, W]` -> `[B, ceil(H/p), ceil(W/p), embed]`
    pub fn forward(&self, img: Tensor<B, 4>) -> Tensor<B, 4> {
        let p = self.patch;
        let img = img.permute([0, 2, 3, 1]); // [B, H, W, C]
        let [b, h, w, c] = img.dims();
        let img = pad_bottom_right(img, (p - h % p) % p, (p - w % p) % p);
        let [_, hp, wp, _] = img.dims();
        let (gh, gw) = (hp / p, wp / p);
        let patches = img
            .reshape([b, gh, p, gw, p, c]) // [B, gh, ph, gw, pw, C]
            .permute([0, 1, 3, 5, 2, 4]) // [B, gh, gw, C, ph, pw]
            .reshape([b, gh, gw, c * p * p]);
        layer_norm(&self.norm, on_rows(patches, |r| self.proj.forward(r)))
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        let embed = self.proj.weight.val().dims()[1];
        let torch = vec![embed, self.in_chans, self.patch, self.patch];
        self.proj = params::linear_as(v, &join(prefix, "proj"), self.proj, Some(torch));
        self.norm = params::layer_norm(v, &join(prefix, "norm"), self.norm);
        self
    }
}

/// Downsampling by 2: concatenates each 2x2 neighbourhood (order x00, x10, x01, x11), LayerNorm,
/// then a bias-free Linear `4C -> 2C`.
#[derive(Module, Debug)]
pub struct PatchMerging<B: Backend> {
    /// LayerNorm over `4C`.
    pub norm: LayerNorm<B>,
    /// Linear `4C -> 2C` without bias.
    pub reduction: Linear<B>,
}

impl<B: Backend> PatchMerging<B> {
    /// New patch merging for input width `dim`.
    pub fn new(dim: usize, eps: f64, init: Init, device: &B::Device) -> Self {
        Self {
            norm: new_layer_norm(4 * dim, eps, device),
            reduction: new_linear(4 * dim, 2 * dim, false, init, device),
        }
    }

    /// # Shapes
    /// `[B, H, W, C]` -> `[B, ceil(H/2), ceil(W/2), 2C]` (odd sides are zero-padded)
    ///
    /// The 2x2 neighbourhoods are gathered as whole rows of `C` ([`merge_index`]), padding included.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, w, c] = x.dims();
        let (ho, wo) = (h.div_ceil(2), w.div_ceil(2));
        let rows = x.reshape([b * h * w, c]);
        let rows = if h % 2 == 1 || w % 2 == 1 {
            let device = rows.device();
            Tensor::cat(vec![rows, Tensor::zeros([1, c], &device)], 0)
        } else {
            rows
        };
        let index = cached_rows("merge", &[b, h, w], || merge_index(b, h, w));
        let x = gather_rows(rows, &index).reshape([b, ho, wo, 4 * c]);
        on_rows(layer_norm(&self.norm, x), |r| self.reduction.forward(r))
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        self.norm = params::layer_norm(v, &join(prefix, "norm"), self.norm);
        self.reduction = params::linear(v, &join(prefix, "reduction"), self.reduction);
        self
    }
}

/// Upsampling by `factor`: a bias-free Linear, a pixel-shuffle of the channels
/// (`'B H W (P1 P2 c) -> B (H P1) (W P2) c'`), then LayerNorm over `c`.
/// `factor = 2` halves the width (`PatchExpanding`); `factor = 4` keeps it (`FinalPatchExpand_X4`).
#[derive(Module, Debug)]
pub struct PatchExpanding<B: Backend> {
    /// Linear `C -> factor² c` without bias.
    pub expand: Linear<B>,
    /// LayerNorm over `c`.
    pub norm: LayerNorm<B>,
    factor: usize,
    out_dim: usize,
}

impl<B: Backend> PatchExpanding<B> {
    /// New expansion of width `dim` by `factor` (2: `c = dim / 2`; 4: `c = dim`).
    pub fn new(dim: usize, factor: usize, eps: f64, init: Init, device: &B::Device) -> Self {
        let out_dim = if factor == 2 { dim / 2 } else { dim };
        Self {
            expand: new_linear(dim, factor * factor * out_dim, false, init, device),
            norm: new_layer_norm(out_dim, eps, device),
            factor,
            out_dim,
        }
    }

    /// # Shapes
    /// `[B, H, W, C]` -> `[B, f H, f W, c]`
    ///
    /// The pixel shuffle is a gather of whole rows of `c` ([`expand_index`]).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, h, w, _] = x.dims();
        let (f, c) = (self.factor, self.out_dim);
        let rows = on_rows(x, |r| self.expand.forward(r)).reshape([b * h * w * f * f, c]);
        let index = cached_rows("expand", &[b, h, w, f], || expand_index(b, h, w, f));
        layer_norm(&self.norm, gather_rows(rows, &index).reshape([b, h * f, w * f, c]))
    }

    /// The expansion and LayerNorm of token rows `[N, C]` with the pixel shuffle left out:
    /// `[N*f*f, c]` rows in (token, `P1`, `P2`) order. Row-wise layers that follow commute with the
    /// shuffle, so a caller that narrows the channels first (the segmentation head) shuffles less.
    pub fn forward_unshuffled(&self, rows: Tensor<B, 2>) -> Tensor<B, 2> {
        let n = rows.dims()[0];
        let (f, c) = (self.factor, self.out_dim);
        self.norm.forward(self.expand.forward(rows).reshape([n * f * f, c]))
    }

    /// The side factor.
    pub fn factor(&self) -> usize {
        self.factor
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        self.expand = params::linear(v, &join(prefix, "expand"), self.expand);
        self.norm = params::layer_norm(v, &join(prefix, "norm"), self.norm);
        self
    }
}

/// `fc1 (C -> rC)`, exact GELU, `fc2 (rC -> C)`; dropout rates are 0 in every VIS-MAE recipe.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// First projection.
    pub fc1: Linear<B>,
    /// Second projection.
    pub fc2: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// New MLP of width `dim` and hidden width `hidden`.
    pub fn new(dim: usize, hidden: usize, init: Init, device: &B::Device) -> Self {
        Self { fc1: new_linear(dim, hidden, true, init, device), fc2: new_linear(hidden, dim, true, init, device) }
    }

    /// # Shapes
    /// `[..., C]` -> `[..., C]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        on_rows(x, |r| self.fc2.forward(gelu(self.fc1.forward(r))))
    }

    /// Visits the parameters under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        self.fc1 = params::linear(v, &join(prefix, "fc1"), self.fc1);
        self.fc2 = params::linear(v, &join(prefix, "fc2"), self.fc2);
        self
    }
}
