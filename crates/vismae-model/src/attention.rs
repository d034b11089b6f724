//! Window multi-head self-attention with the relative position bias table, zero padding to whole
//! windows and the cyclic shift with its region mask (SPEC §1.3, `swin_unet.py::WindowAttention`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};

use crate::cpu::{AttentionShape, softmax_last, window_attention};
use crate::geometry::{
    WindowIndex, gather_rows, head_merge_index, qkv_split_index, relative_bias_index, relative_position_index,
    shift_attention_mask, window_index,
};
use crate::layers::{Init, new_linear, on_rows};
use crate::params::{self, Buffer, ParamIo, join};

/// Gather indices and constants of one attention geometry.
struct Indices {
    window: WindowIndex,
    /// Whether some window row reads the zero row (the grid is padded to whole windows).
    padded: bool,
    qkv: Vec<i64>,
    heads: Vec<i64>,
    bias: Vec<i64>,
    /// The shift mask repeated over heads, `[nW, nH, L, L]` (shifted blocks only).
    mask: Option<Vec<f32>>,
}

/// `(batch, h, w, window, shift, heads)`.
type Geometry = (usize, usize, usize, usize, usize, usize);

thread_local! {
    static INDICES: std::cell::RefCell<std::collections::HashMap<Geometry, std::rc::Rc<Indices>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The indices of a `(batch, h, w, window, shift, heads)` geometry, built once per thread.
fn cached_indices(b: usize, h: usize, w: usize, ws: usize, shift: usize, nh: usize) -> std::rc::Rc<Indices> {
    INDICES.with(|cache| {
        cache
            .borrow_mut()
            .entry((b, h, w, ws, shift, nh))
            .or_insert_with(|| {
                let window = window_index(b, h, w, ws, shift);
                let (hp, wp) = window.padded;
                let n_win = (hp / ws) * (wp / ws);
                let (bn, l) = (b * n_win, ws * ws);
                let mask = (shift > 0).then(|| {
                    let per_window = shift_attention_mask(hp, wp, ws, shift);
                    per_window.chunks(l * l).flat_map(|m| std::iter::repeat_n(m, nh).flatten().copied()).collect()
                });
                std::rc::Rc::new(Indices {
                    padded: (hp, wp) != (h, w),
                    qkv: qkv_split_index(bn, l, nh),
                    heads: head_merge_index(bn, nh, l),
                    bias: relative_bias_index(ws, nh),
                    mask,
                    window,
                })
            })
            .clone()
    })
}

/// Window attention of one Swin block.
#[derive(Module, Debug)]
pub struct WindowAttention<B: Backend> {
    /// `Linear(C, 3C)`; output channels are `[q | k | v]`, each head-major.
    pub qkv: Linear<B>,
    /// Output projection `Linear(C, C)`.
    pub proj: Linear<B>,
    /// Learned bias per relative offset and head, `[(2 ws - 1)², heads]`.
    pub relative_position_bias_table: Param<Tensor<B, 2>>,
    num_heads: usize,
    window: usize,
}

impl<B: Backend> WindowAttention<B> {
    /// New attention of width `dim` with `num_heads` heads over `window x window` windows.
    pub fn new(dim: usize, num_heads: usize, window: usize, qkv_bias: bool, init: Init, device: &B::Device) -> Self {
        let span = 2 * window - 1;
        Self {
            qkv: new_linear(dim, 3 * dim, qkv_bias, init, device),
            proj: new_linear(dim, dim, true, init, device),
            relative_position_bias_table: Param::from_tensor(Tensor::random(
                [span * span, num_heads],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            num_heads,
            window,
        }
    }

    /// The bias added to every window's attention logits, `[heads, ws², ws²]` contiguous (one
    /// gather from the flattened table).
    fn relative_bias(&self, index: &[i64]) -> Tensor<B, 3> {
        let l = self.window * self.window;
        let [rows, nh] = self.relative_position_bias_table.val().dims();
        gather_rows(self.relative_position_bias_table.val().reshape([rows * nh, 1]), index).reshape([nh, l, l])
    }

    /// Attention over windows of an already normalised input; `shift` applies the cyclic shift by
    /// `window / 2` with its region mask (also when the grid is a single window, as the reference does).
    ///
    /// Padding, shift, partition, the q/k/v split, head merge and their reverses are row gathers with
    /// cached indices (see [`window_index`]), so CPU backends copy whole rows instead of walking
    /// strides, and the bias and shift mask are added as one contiguous row per image.
    ///
    /// # Shapes
    /// `[B, H, W, C]` -> `[B, H, W, C]`
    pub fn forward(&self, x: Tensor<B, 4>, shift: bool) -> Tensor<B, 4> {
        let device = x.device();
        let [b, h, w, c] = x.dims();
        let ws = self.window;
        let s = if shift { ws / 2 } else { 0 };
        let idx = cached_indices(b, h, w, ws, s, self.num_heads);
        let (hp, wp) = idx.window.padded;
        let l = ws * ws;
        let n_win = (hp / ws) * (wp / ws);
        let bn = b * n_win;
        let (nh, hd) = (self.num_heads, c / self.num_heads);

        // tokens as rows (one zero row appended when windows need padding), gathered into shifted windows
        let rows = x.reshape([b * h * w, c]);
        let rows = if idx.padded { Tensor::cat(vec![rows, Tensor::zeros([1, c], &device)], 0) } else { rows };
        let windows = gather_rows(rows, &idx.window.forward).reshape([bn, l, c]); // [Bn, L, C]

        let qkv = on_rows(windows, |r| self.qkv.forward(r)); // [Bn, L, 3C]: [q | k | v], each head-major
        // one row gather makes q, k and v contiguous [Bn, nH, L, P] blocks
        let qkv = gather_rows(qkv.reshape([bn * l * 3 * nh, hd]), &idx.qkv).reshape([3, bn * nh * l * hd]);
        // the relative bias (+ the shift mask of each window) as one contiguous row per image
        let bias = self.relative_bias(&idx.bias).reshape([1, nh * l * l]);
        let (bias, bias_windows) = match &idx.mask {
            Some(mask) => {
                (Tensor::<B, 2>::from_data(TensorData::new(mask.clone(), [n_win, nh * l * l]), &device) + bias, n_win)
            }
            None => (bias, 1),
        };
        let scale = (hd as f64).powf(-0.5);
        let shape = AttentionShape { windows: bn, bias_windows, heads: nh, tokens: l, head_dim: hd };
        let fused = match window_attention(&qkv, &bias, shape, scale as f32) {
            Some(out) => Ok(out), // flex inference: one fused kernel, heads already merged
            // flex training: one differentiable operation with its own backward pass
            None => crate::cpu_train_attention::window_attention(qkv, bias, shape, scale as f32),
        };
        let out = match fused {
            Ok(out) => out,
            Err((qkv, bias)) => {
                let part = |k: usize| qkv.clone().narrow(0, k, 1).reshape([bn, nh, l, hd]);
                let q = part(0).mul_scalar(scale);
                let k = part(1).swap_dims(2, 3); // [Bn, nH, P, L], a strided view the matmul reads as is
                let v = part(2);
                let span = bias_windows * nh * l * l;
                let attn = q.matmul(k).reshape([bn / bias_windows, span]) + bias.reshape([1, span]); // [Bn, nH, L, L]
                let attn = softmax_last(attn.reshape([bn * nh * l, l])).reshape([bn, nh, l, l]);
                let out = attn.matmul(v); // [Bn, nH, L, P]
                gather_rows(out.reshape([bn * nh * l, hd]), &idx.heads).reshape([bn * l, c]) // [Bn*L, C]
            }
        };
        let out = self.proj.forward(out);
        // back to token order, dropping padding
        gather_rows(out, &idx.window.reverse).reshape([b, h, w, c])
    }

    /// Visits the parameters (and the `relative_position_index` buffer) under the official keys.
    pub fn visit(mut self, prefix: &str, v: &mut impl ParamIo<B>) -> Self {
        self.relative_position_bias_table =
            params::same(v, &join(prefix, "relative_position_bias_table"), self.relative_position_bias_table);
        let l = self.window * self.window;
        let ws = self.window;
        v.buffer(&join(prefix, "relative_position_index"), vec![l, l], || Buffer::I64(relative_position_index(ws)));
        self.qkv = params::linear(v, &join(prefix, "qkv"), self.qkv);
        self.proj = params::linear(v, &join(prefix, "proj"), self.proj);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;

    /// The fused flex kernel (inference) against burn's ops (the autodiff backend takes that path),
    /// same weights: shifted and not, padded grids, every head width the kernel has.
    #[test]
    fn fused_window_attention_equals_burns_ops() {
        type Ad = Autodiff<TestBackend>;
        let dev = Default::default();
        for (dim, heads, h, w, shift) in [
            (24usize, 3usize, 14usize, 14usize, true),
            (48, 3, 10, 12, true),
            (96, 3, 7, 7, false),
            (128, 2, 9, 8, true),
        ] {
            <Ad as Backend>::seed(&dev, 7);
            let attn = WindowAttention::<Ad>::new(dim, heads, 7, true, Init::TruncNormal, &dev);
            let x = Tensor::<Ad, 4>::random([2, h, w, dim], Distribution::Normal(0.0, 1.0), &dev);
            let want: Vec<f32> = attn.forward(x.clone(), shift).into_data().to_vec().unwrap_or_default();
            let got: Vec<f32> = attn.valid().forward(x.inner(), shift).into_data().to_vec().unwrap_or_default();
            assert_eq!(want.len(), got.len());
            let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, |m, d| m.max(d));
            assert!(got.iter().all(|v| v.is_finite()), "dim {dim} heads {heads} shift {shift}: not finite");
            assert!(worst < 1e-5, "dim {dim} heads {heads} {h}x{w} shift {shift}: max difference {worst:e}");
        }
        // the inference backend takes the fused kernel, autodiff does not
        let shape = AttentionShape { windows: 2, bias_windows: 1, heads: 1, tokens: 49, head_dim: 32 };
        let (qkv, bias) = (Tensor::<Ad, 2>::zeros([3, 2 * 49 * 32], &dev), Tensor::<Ad, 2>::zeros([1, 49 * 49], &dev));
        assert!(window_attention(&qkv.clone().inner(), &bias.clone().inner(), shape, 1.0).is_some());
        assert!(window_attention(&qkv, &bias, shape, 1.0).is_none());
    }
}
