//! One walk over every parameter of a network under its official PyTorch key, used by weight import,
//! export and transfer alike (timm `checkpoint_filter_fn`, burn-store `ApplyResult`). Each layer
//! states how its burn tensor maps onto the PyTorch one: same shape, or a matrix transpose of the
//! PyTorch tensor viewed as `[out, rest]` (Linear, 1x1 and patch convolutions).

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, backend::Backend};

/// How a burn parameter relates to its PyTorch counterpart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchLayout {
    /// Shape of the tensor in the official state dict.
    pub shape: Vec<usize>,
    /// burn stores the transpose of the PyTorch tensor viewed as `[shape[0], product(rest)]`.
    pub transposed: bool,
}

/// A non-trainable tensor that the official state dict carries (`relative_position_index`,
/// `pos_embed`). It is recomputed, never learned.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// 64-bit integers.
    I64(Vec<i64>),
    /// 32-bit floats.
    F32(Vec<f32>),
}

/// Visits parameters by their official key; may replace them (import) or only read them (export).
pub trait ParamIo<B: Backend> {
    /// Called once for every trainable tensor.
    fn param<const D: usize>(
        &mut self,
        key: &str,
        param: Param<Tensor<B, D>>,
        layout: TorchLayout,
    ) -> Param<Tensor<B, D>>;

    /// Called once for every buffer the official state dict holds beside the parameters.
    fn buffer(&mut self, key: &str, shape: Vec<usize>, value: impl FnOnce() -> Buffer);
}

/// Joins a prefix and a name with a dot (`""` + `x` is `x`).
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// A tensor whose PyTorch shape equals the burn shape.
pub fn same<B: Backend, const D: usize>(
    v: &mut impl ParamIo<B>,
    key: &str,
    p: Param<Tensor<B, D>>,
) -> Param<Tensor<B, D>> {
    let shape = p.val().dims().to_vec();
    v.param(key, p, TorchLayout { shape, transposed: false })
}

/// A `Linear` (`weight [out, in]` in PyTorch), or a convolution given as `torch_weight_shape`
/// (`[out, in, kh, kw]`) that burn runs as a Linear on flattened patches.
pub fn linear_as<B: Backend>(
    v: &mut impl ParamIo<B>,
    prefix: &str,
    mut l: Linear<B>,
    torch_weight_shape: Option<Vec<usize>>,
) -> Linear<B> {
    let [d_in, d_out] = l.weight.val().dims();
    let shape = torch_weight_shape.unwrap_or_else(|| vec![d_out, d_in]);
    l.weight = v.param(&join(prefix, "weight"), l.weight, TorchLayout { shape, transposed: true });
    l.bias = l.bias.map(|b| same(v, &join(prefix, "bias"), b));
    l
}

/// A PyTorch `Linear`.
pub fn linear<B: Backend>(v: &mut impl ParamIo<B>, prefix: &str, l: Linear<B>) -> Linear<B> {
    linear_as(v, prefix, l, None)
}

/// A PyTorch `LayerNorm` (`weight` = burn's gamma, `bias` = beta).
pub fn layer_norm<B: Backend>(v: &mut impl ParamIo<B>, prefix: &str, mut n: LayerNorm<B>) -> LayerNorm<B> {
    n.gamma = same(v, &join(prefix, "weight"), n.gamma);
    n.beta = n.beta.map(|b| same(v, &join(prefix, "bias"), b));
    n
}

/// Host-side matrix transpose of a row-major `[rows, cols]` buffer.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Converts data in PyTorch layout to burn layout (`transposed` undoes the `[out, rest]` view).
pub fn torch_to_burn(data: &[f32], layout: &TorchLayout) -> Vec<f32> {
    if layout.transposed {
        let rows = layout.shape[0];
        let cols = layout.shape[1..].iter().product::<usize>();
        transpose(data, rows, cols)
    } else {
        data.to_vec()
    }
}

/// Converts data in burn layout to PyTorch layout.
pub fn burn_to_torch(data: &[f32], layout: &TorchLayout) -> Vec<f32> {
    if layout.transposed {
        let rows = layout.shape[0];
        let cols = layout.shape[1..].iter().product::<usize>();
        transpose(data, cols, rows)
    } else {
        data.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_round_trip() {
        let layout = TorchLayout { shape: vec![2, 3, 1, 1], transposed: true };
        let torch = vec![1., 2., 3., 4., 5., 6.];
        let burn = torch_to_burn(&torch, &layout);
        assert_eq!(burn, vec![1., 4., 2., 5., 3., 6.]);
        assert_eq!(burn_to_torch(&burn, &layout), torch);
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a.b", "c"), "a.b.c");
    }
}
