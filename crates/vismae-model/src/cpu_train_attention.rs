//! Window attention for training on flex: `softmax(scale q kᵀ + bias) v` as one burn-autodiff
//! operation with its own backward pass, per window and head in registers and L1, where burn
//! records the scale, two matmuls, the broadcast add and softmax's own operations, and
//! materialises each `[windows, heads, 49, 49]` result and its gradient. The forward pass keeps the attention
//! probabilities `p` for the backward pass, which is, per window and head (`s` the logits):
//! `dv = pᵀ do`, `dp = do vᵀ`, `ds = p ⊙ (dp − rowsum(p ⊙ dp))`, `dq = scale ds k`,
//! `dk = scale dsᵀ q`, and the bias gradient `ds` summed over the windows that share a bias.
//! Anything but float32 `Autodiff<Flex>` tensors of a supported shape is handed back.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::cpu::{AttentionShape, add_products, from_any, has_fma, reduce, softmax_padded, transposed, weighted_rows};
use crate::cpu_train::{contiguous, flex_from, into_autodiff_flex, values};

/// Tokens per window the kernels are built for (7 x 7), and a row of scores padded to whole vectors.
const L: usize = 49;
const W: usize = 64;

/// [`crate::cpu::window_attention`]'s computation (same layouts: `qkv` `[3, windows * heads *
/// tokens * head_dim]`, `bias` `[bias_windows, heads * tokens²]`, the result `[windows * tokens,
/// heads * head_dim]`), differentiable with respect to `qkv` and `bias`. `Err` hands both back.
#[allow(clippy::type_complexity)]
pub fn window_attention<B: Backend>(
    qkv: Tensor<B, 2>,
    bias: Tensor<B, 2>,
    shape: AttentionShape,
    scale: f32,
) -> Result<Tensor<B, 2>, (Tensor<B, 2>, Tensor<B, 2>)> {
    let AttentionShape { windows, bias_windows, heads, head_dim, .. } = shape;
    let supported = shape.has_kernel()
        && qkv.dims() == [3, windows * heads * L * head_dim]
        && bias.dims() == [bias_windows, heads * L * L];
    if !supported {
        return Err((qkv, bias));
    }
    let qkv = match into_autodiff_flex(qkv) {
        Ok(t) => t,
        Err(qkv) => return Err((qkv, bias)),
    };
    let bias = match into_autodiff_flex(bias) {
        Ok(t) => t,
        Err(bias) => return Err((from_any(Box::new(qkv)), bias)),
    };
    let (qkv_in, bias_in) = (contiguous(qkv.primitive.clone()), contiguous(bias.primitive.clone()));
    let (out, probs) = forward(values(&qkv_in), values(&bias_in), shape, scale);
    let out = flex_from(out, vec![windows * L, heads * head_dim]);
    let out = match AttentionBackward
        .prepare::<NoCheckpointing>([qkv.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let probs = flex_from(probs, vec![windows * heads * L * L]);
            prep.finish(State { qkv: qkv_in, probs, shape, scale }, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(from_any(Box::new(out)))
}

/// The output (heads merged) and the probabilities `[windows, heads, L, L]`.
fn forward(qkv: &[f32], bias: &[f32], shape: AttentionShape, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let (nh, p) = (shape.heads, shape.head_dim);
    let mut out = vec![0.0f32; shape.windows * nh * L * p];
    let mut probs = vec![0.0f32; shape.windows * nh * L * L];
    let ctx = Context { qkv, bias, shape, scale };
    out.par_chunks_mut(nh * L * p).zip(probs.par_chunks_mut(nh * L * L)).enumerate().for_each(|(w, (out, probs))| {
        pulp::Arch::new().dispatch(Window { ctx: &ctx, w, job: Job::Forward { out, probs } });
    });
    (out, probs)
}

/// What the backward pass keeps: the input `qkv` (contiguous), the probabilities, the shape.
#[derive(Clone, Debug)]
struct State {
    qkv: FlexTensor,
    probs: FlexTensor,
    shape: AttentionShape,
    scale: f32,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 2> for AttentionBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let State { qkv, probs, shape, scale } = ops.state;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let [qkv_node, bias_node] = ops.parents;
        if qkv_node.is_none() && bias_node.is_none() {
            return;
        }
        let (nh, p, n) = (shape.heads, shape.head_dim, shape.windows);
        let part = n * nh * L * p;
        let mut dqkv = vec![0.0f32; 3 * part];
        let mut ds = vec![0.0f32; n * nh * L * L];
        {
            let ctx = Context { qkv: values(&qkv), bias: &[], shape, scale };
            let (go, pr) = (values(&grad), values(&probs));
            let (dq, rest) = dqkv.split_at_mut(part);
            let (dk, dv) = rest.split_at_mut(part);
            let chunk = nh * L * p;
            dq.par_chunks_mut(chunk)
                .zip(dk.par_chunks_mut(chunk))
                .zip(dv.par_chunks_mut(chunk))
                .zip(ds.par_chunks_mut(nh * L * L))
                .enumerate()
                .for_each(|(w, (((dq, dk), dv), ds))| {
                    let job = Job::Backward {
                        grad: &go[w * chunk..(w + 1) * chunk],
                        probs: &pr[w * nh * L * L..(w + 1) * nh * L * L],
                        dq,
                        dk,
                        dv,
                        ds,
                    };
                    pulp::Arch::new().dispatch(Window { ctx: &ctx, w, job });
                });
        }
        if let Some(node) = bias_node {
            // windows w and w + k * bias_windows share a bias
            let span = nh * L * L;
            let mut dbias = vec![0.0f32; shape.bias_windows * span];
            dbias.par_chunks_mut(span).enumerate().for_each(|(b, dst)| {
                for w in (b..n).step_by(shape.bias_windows) {
                    for (d, &s) in dst.iter_mut().zip(&ds[w * span..(w + 1) * span]) {
                        *d += s;
                    }
                }
            });
            grads.register::<Flex>(node.id, flex_from(dbias, vec![shape.bias_windows, span]));
        }
        if let Some(node) = qkv_node {
            grads.register::<Flex>(node.id, flex_from(dqkv, vec![3, part]));
        }
    }
}

struct Context<'a> {
    qkv: &'a [f32],
    bias: &'a [f32],
    shape: AttentionShape,
    scale: f32,
}

enum Job<'a> {
    Forward {
        out: &'a mut [f32],
        probs: &'a mut [f32],
    },
    Backward {
        grad: &'a [f32],
        probs: &'a [f32],
        dq: &'a mut [f32],
        dk: &'a mut [f32],
        dv: &'a mut [f32],
        ds: &'a mut [f32],
    },
}

/// One window, all heads, in the instruction set pulp dispatched to.
struct Window<'a> {
    ctx: &'a Context<'a>,
    w: usize,
    job: Job<'a>,
}

impl pulp::WithSimd for Window<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        match (self.ctx.shape.head_dim, has_fma()) {
            (4, true) => self.run::<4, true>(),
            (8, true) => self.run::<8, true>(),
            (16, true) => self.run::<16, true>(),
            (32, true) => self.run::<32, true>(),
            (_, true) => self.run::<64, true>(),
            (4, false) => self.run::<4, false>(),
            (8, false) => self.run::<8, false>(),
            (16, false) => self.run::<16, false>(),
            (32, false) => self.run::<32, false>(),
            (_, false) => self.run::<64, false>(),
        }
    }
}

impl Window<'_> {
    #[inline(always)]
    fn run<const P: usize, const FMA: bool>(self) {
        let Context { qkv, bias, shape, scale } = *self.ctx;
        let (w, nh) = (self.w, shape.heads);
        let part = shape.windows * nh * L * P;
        match self.job {
            Job::Forward { out, probs } => {
                for h in 0..nh {
                    let at = (w * nh + h) * L * P;
                    let (q, k, v) = (&qkv[at..at + L * P], &qkv[part + at..][..L * P], &qkv[2 * part + at..][..L * P]);
                    let b_at = ((w % shape.bias_windows) * nh + h) * L * L;
                    let probs = &mut probs[h * L * L..(h + 1) * L * L];
                    let kt = transposed::<W, P>(k);
                    for i in 0..L {
                        let mut s = [[f32::NEG_INFINITY; W]];
                        s[0][..L].copy_from_slice(&bias[b_at + i * L..b_at + (i + 1) * L]);
                        add_products::<W, P, 1, FMA>(&mut s, &q[i * P..(i + 1) * P], &kt, scale);
                        softmax_padded::<L, W, FMA>(&mut s[0]);
                        let pi = &mut probs[i * L..(i + 1) * L];
                        pi.copy_from_slice(&s[0][..L]);
                        let o = weighted_rows::<L, P, FMA>(pi, v);
                        out[(i * nh + h) * P..(i * nh + h + 1) * P].copy_from_slice(&o);
                    }
                }
            }
            Job::Backward { grad, probs, dq, dk, dv, ds } => {
                for h in 0..nh {
                    let at = (w * nh + h) * L * P;
                    let (q, k, v) = (&qkv[at..at + L * P], &qkv[part + at..][..L * P], &qkv[2 * part + at..][..L * P]);
                    let local = h * L * P;
                    let (dq, dk, dv) =
                        (&mut dq[local..local + L * P], &mut dk[local..local + L * P], &mut dv[local..local + L * P]);
                    let probs = &probs[h * L * L..(h + 1) * L * L];
                    let ds = &mut ds[h * L * L..(h + 1) * L * L];
                    // this head's output gradient, [L, P]
                    let mut go = [0.0f32; L * 64];
                    for i in 0..L {
                        go[i * P..(i + 1) * P].copy_from_slice(&grad[(i * nh + h) * P..(i * nh + h + 1) * P]);
                    }
                    let go = &go[..L * P];
                    let vt = transposed::<W, P>(v);
                    for i in 0..L {
                        let pi = &probs[i * L..(i + 1) * L];
                        // dp_i = do_i vᵀ, then ds_i = p_i ⊙ (dp_i − p_i · dp_i)
                        let mut dp = [[0.0f32; W]];
                        add_products::<W, P, 1, FMA>(&mut dp, &go[i * P..(i + 1) * P], &vt, 1.0);
                        let dp = &dp[0];
                        let mut pd = [0.0f32; W];
                        for j in 0..L {
                            pd[j] = pi[j] * dp[j];
                        }
                        let dot = reduce(&pd, 0.0, |a, b| a + b);
                        let dsi = &mut ds[i * L..(i + 1) * L];
                        for j in 0..L {
                            dsi[j] = pi[j] * (dp[j] - dot);
                        }
                        // dq_i = scale ds_i k
                        let o = weighted_rows::<L, P, FMA>(dsi, k);
                        for (d, &x) in dq[i * P..(i + 1) * P].iter_mut().zip(&o) {
                            *d = x * scale;
                        }
                    }
                    // dv_j = Σ_i p_ij do_i and dk_j = scale Σ_i ds_ij q_i, over columns of p and ds
                    for j in 0..L {
                        let (mut pc, mut dc) = ([0.0f32; L], [0.0f32; L]);
                        for i in 0..L {
                            pc[i] = probs[i * L + j];
                            dc[i] = ds[i * L + j] * scale;
                        }
                        dv[j * P..(j + 1) * P].copy_from_slice(&weighted_rows::<L, P, FMA>(&pc, go));
                        dk[j * P..(j + 1) * P].copy_from_slice(&weighted_rows::<L, P, FMA>(&dc, q));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, activation::softmax};

    type Ad = Autodiff<Flex>;

    /// Output and the gradients of qkv and bias, against fixed output weights, by this op
    /// (`fused`) or by burn's ops.
    fn run(qkv: &Tensor<Flex, 2>, bias: &Tensor<Flex, 2>, shape: AttentionShape, fused: bool) -> [Vec<f32>; 3] {
        let AttentionShape { windows: n, bias_windows: bw, heads: nh, head_dim: p, .. } = shape;
        let dev = Default::default();
        let scale = (p as f32).powf(-0.5);
        let qkv_a = Tensor::<Ad, 2>::from_inner(qkv.clone()).require_grad();
        let bias_a = Tensor::<Ad, 2>::from_inner(bias.clone()).require_grad();
        let out = if fused {
            window_attention(qkv_a.clone(), bias_a.clone(), shape, scale).unwrap_or_else(|_| panic!("handed back"))
        } else {
            let part = |k: usize| qkv_a.clone().narrow(0, k, 1).reshape([n, nh, L, p]);
            let s = part(0).mul_scalar(scale).matmul(part(1).swap_dims(2, 3)).reshape([n / bw, bw, nh, L, L])
                + bias_a.clone().reshape([1, bw, nh, L, L]);
            let o = softmax(s.reshape([n, nh, L, L]), 3).matmul(part(2)); // [n, nh, L, p]
            o.swap_dims(1, 2).reshape([n * L, nh * p])
        };
        <Flex as Backend>::seed(&dev, 5); // the same output weights for both
        let weights = Tensor::<Ad, 2>::random(out.dims(), Distribution::Normal(0.0, 1.0), &dev);
        let grads = (out.clone() * weights).sum().backward();
        let vals =
            |t: Option<Tensor<Flex, 2>>| t.map(|g| g.into_data().to_vec().unwrap_or_default()).unwrap_or_default();
        [out.into_data().to_vec().unwrap_or_default(), vals(qkv_a.grad(&grads)), vals(bias_a.grad(&grads))]
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        assert!(!a.is_empty());
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1.0);
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
    }

    #[test]
    fn fused_attention_trains_like_burns_ops() {
        let dev = Default::default();
        // 4 windows sharing 2 biases (a shift mask with -inf entries in one), 3 heads of 32; and
        // one bias for 2 windows, 2 heads of 16; 3 windows, 3 biases (one masked), 2 heads of 4
        for (n, bw, nh, p) in [(4, 2, 3, 32), (2, 1, 2, 16), (3, 3, 2, 4)] {
            let shape = AttentionShape { windows: n, bias_windows: bw, heads: nh, tokens: L, head_dim: p };
            <Flex as Backend>::seed(&dev, 11);
            let qkv = Tensor::<Flex, 2>::random([3, n * nh * L * p], Distribution::Normal(0.0, 1.5), &dev);
            let mut b: Vec<f32> = Tensor::<Flex, 2>::random([bw, nh * L * L], Distribution::Normal(0.0, 1.0), &dev)
                .into_data()
                .to_vec()
                .unwrap_or_default();
            if bw > 1 {
                for (i, x) in b[nh * L * L..].iter_mut().enumerate() {
                    if (i / L) % L / 25 != (i % L) / 25 {
                        *x = f32::NEG_INFINITY;
                    }
                }
            }
            let bias = Tensor::<Flex, 2>::from_data(burn::tensor::TensorData::new(b, [bw, nh * L * L]), &dev);
            let ours = run(&qkv, &bias, shape, true);
            let want = run(&qkv, &bias, shape, false);
            for (name, (a, b)) in ["output", "qkv gradient", "bias gradient"].iter().zip(ours.iter().zip(&want)) {
                let d = worst(a, b);
                assert!(d < 2e-6, "{n} windows, {nh} heads of {p}: {name} differs by {d:e}");
            }
        }
    }

    #[test]
    fn unsupported_shapes_and_backends_are_handed_back() {
        let dev = Default::default();
        let shape = AttentionShape { windows: 1, bias_windows: 1, heads: 1, tokens: L, head_dim: 8 };
        let qkv = Tensor::<Flex, 2>::zeros([3, L * 8], &dev);
        let bias = Tensor::<Flex, 2>::zeros([1, L * L], &dev);
        assert!(window_attention(qkv.clone(), bias.clone(), shape, 1.0).is_err());
        let odd = AttentionShape { head_dim: 12, ..shape };
        let qkv = Tensor::<Ad, 2>::zeros([3, L * 12], &dev);
        assert!(window_attention(qkv, Tensor::from_inner(bias), odd, 1.0).is_err());
    }
}
