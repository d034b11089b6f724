//! Window multi-head self-attention with the relative position bias table, zero padding to whole
//! windows and the cyclic shift with its region mask (SPEC §1.3, `swin_unet.py::WindowAttention`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Distribution, Int, Tensor, TensorData, activation::softmax, backend::Backend};

use crate::geometry::{
    pad_bottom_right, pad_to_multiple, relative_position_index, roll_dim, shift_attention_mask, window_partition,
    window_reverse,
};
use crate::layers::{Init, new_linear};
use crate::params::{self, Buffer, ParamIo, join};

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
    /// # Shapes
    /// `[B, H, W, C]` -> `[B, H, W, C]`
    pub fn forward(&self, x: Tensor<B, 4>, shift: bool) -> Tensor<B, 4> {
        let device = x.device();
        let [b, h, w, c] = x.dims();
        let ws = self.window;
        let x = pad_bottom_right(x, pad_to_multiple(h, ws), pad_to_multiple(w, ws));
        let [_, hp, wp, _] = x.dims();
        let s = (ws / 2) as i64;
        let x = if shift { roll_dim(roll_dim(x, 1, -s), 2, -s) } else { x };

        let windows = window_partition(x, ws); // [Bn, L, C]
        let [bn, l, _] = windows.dims();
        let (nh, hd) = (self.num_heads, c / self.num_heads);
        let qkv = self.qkv.forward(windows).reshape([bn, l, 3, nh, hd]).permute([2, 0, 3, 1, 4]); // [3, Bn, nH, L, P]
        let q = qkv.clone().narrow(0, 0, 1).reshape([bn, nh, l, hd]);
        let k = qkv.clone().narrow(0, 1, 1).reshape([bn, nh, l, hd]);
        let v = qkv.narrow(0, 2, 1).reshape([bn, nh, l, hd]);

        let q = q.mul_scalar((hd as f64).powf(-0.5));
        let attn = q.matmul(k.swap_dims(2, 3)); // [Bn, nH, L, L]
        let attn = attn + self.relative_bias(&device).unsqueeze_dim::<4>(0);
        let attn = if shift {
            let n_win = (hp / ws) * (wp / ws);
            let mask = shift_attention_mask(hp, wp, ws, s as usize);
            let mask = Tensor::<B, 5>::from_data(TensorData::new(mask, [1, n_win, 1, l, l]), &device);
            (attn.reshape([b, n_win, nh, l, l]) + mask).reshape([bn, nh, l, l])
        } else {
            attn
        };
        let attn = softmax(attn, 3);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([bn, l, c]); // [Bn, L, C]
        let out = self.proj.forward(out);

        let out = window_reverse(out, ws, b, hp, wp);
        let out = if shift { roll_dim(roll_dim(out, 1, s), 2, s) } else { out };
        if hp != h || wp != w { out.narrow(1, 0, h).narrow(2, 0, w) } else { out }
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
