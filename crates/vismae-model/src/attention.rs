//! Window multi-head self-attention with the relative position bias table, zero padding to whole
//! windows and the cyclic shift with its region mask (SPEC §1.3, `swin_unet.py::WindowAttention`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Distribution, Int, Tensor, TensorData, activation::softmax, backend::Backend};

use crate::geometry::{WindowIndex, head_merge_index, relative_position_index, shift_attention_mask, window_index};
use crate::layers::{Init, new_linear, on_rows};
use crate::params::{self, Buffer, ParamIo, join};

/// Gather indices of one attention geometry.
struct Indices {
    window: WindowIndex,
    heads: Vec<i64>,
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
                let bn = b * (hp / ws) * (wp / ws);
                std::rc::Rc::new(Indices { heads: head_merge_index(bn, nh, ws * ws), window })
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

    /// The bias added to every window's attention logits, `[heads, ws², ws²]`.
    fn relative_bias(&self, device: &B::Device) -> Tensor<B, 3> {
        let l = self.window * self.window;
        let index = relative_position_index(self.window);
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [l * l]), device);
        self.relative_position_bias_table
            .val()
            .select(0, index) // [L*L, heads]
            .reshape([l, l, self.num_heads])
            .permute([2, 0, 1])
    }

    /// Attention over windows of an already normalised input; `shift` applies the cyclic shift by
    /// `window / 2` with its region mask (also when the grid is a single window, as the reference does).
    ///
    /// Padding, shift, partition, head merge and their reverses are row gathers with cached indices
    /// (see [`window_index`]), so CPU backends copy whole rows instead of walking strides.
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
        let bn = b * (hp / ws) * (wp / ws);
        let (nh, hd) = (self.num_heads, c / self.num_heads);
        let int = |v: &[i64]| Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);

        // tokens as rows, one zero row for the padding, gathered into shifted windows
        let rows = Tensor::cat(vec![x.reshape([b * h * w, c]), Tensor::zeros([1, c], &device)], 0);
        let windows = rows.select(0, int(&idx.window.forward)).reshape([bn, l, c]); // [Bn, L, C]

        let qkv = on_rows(windows, |r| self.qkv.forward(r)); // [Bn, L, 3C]: [q | k | v], each head-major
        let part = |k: usize| qkv.clone().narrow(2, k * c, c).reshape([bn, l, nh, hd]); // [Bn, L, nH, P]
        let q = part(0).swap_dims(1, 2).mul_scalar((hd as f64).powf(-0.5)); // [Bn, nH, L, P]
        let k = part(1).permute([0, 2, 3, 1]); // [Bn, nH, P, L]
        let v = part(2).swap_dims(1, 2); // [Bn, nH, L, P]
        let attn = q.matmul(k) + self.relative_bias(&device).unsqueeze_dim::<4>(0); // [Bn, nH, L, L]
        let attn = if shift {
            let n_win = (hp / ws) * (wp / ws);
            let mask = shift_attention_mask(hp, wp, ws, s);
            let mask = Tensor::<B, 5>::from_data(TensorData::new(mask, [1, n_win, 1, l, l]), &device);
            (attn.reshape([b, n_win, nh, l, l]) + mask).reshape([bn, nh, l, l])
        } else {
            attn
        };
        let out = on_rows(attn, |r| softmax(r, 1)).matmul(v); // [Bn, nH, L, P]
        let out = out.reshape([bn * nh * l, hd]).select(0, int(&idx.heads)).reshape([bn, l, c]); // [Bn, L, C]
        let out = on_rows(out, |r| self.proj.forward(r));
        // back to token order, dropping padding
        out.reshape([bn * l, c]).select(0, int(&idx.window.reverse)).reshape([b, h, w, c])
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
