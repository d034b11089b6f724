//! Vectorised float32 kernels for inference on burn's flex CPU backend: exact GELU, the softmax of
//! attention rows, and fused window attention. burn 0.21's flex evaluates `erf` and `exp` one
//! scalar at a time, and runs a 49 x 49 attention as separate small gemm calls, bias and softmax
//! passes over tensors that leave the cache. These functions stay backend-generic: on flex without
//! autodiff they work on the tensor's values, compiled for each instruction set pulp dispatches to
//! at run time; under `Autodiff<Flex>`, GELU and window attention run as the operations of
//! [`crate::cpu_train`] and [`crate::cpu_train_attention`] (with their backward passes); on every
//! other backend, and for softmax under autodiff, the caller's burn ops run instead.

use std::any::Any;

use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend};
use burn_flex::FlexTensor;

/// `x` as a float32 flex tensor, or `x` handed back when it is not one.
fn into_flex<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<FlexTensor, Tensor<B, D>> {
    let prim = match x.into_primitive() {
        TensorPrimitive::Float(prim) => prim,
        quantized => return Err(Tensor::from_primitive(quantized)),
    };
    let boxed: Box<dyn Any> = Box::new(prim);
    match boxed.downcast::<FlexTensor>() {
        Ok(flex) if flex.dtype() == DType::F32 => Ok(*flex),
        Ok(flex) => Err(from_any(flex)),
        Err(other) => Err(from_any(other)),
    }
}

/// The tensor of a boxed primitive that came from backend `B`.
pub(crate) fn from_any<B: Backend, const D: usize>(boxed: Box<dyn Any>) -> Tensor<B, D> {
    match boxed.downcast::<B::FloatTensorPrimitive>() {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(*p)),
        Err(_) => unreachable!("the primitive came from this backend"),
    }
}

/// Runs `kernel` on the values of `x` (row-major, owned, contiguous) when `x` is a float32 flex
/// tensor, and returns `x` untouched as the error otherwise.
fn on_flex_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kernel: impl FnOnce(&mut [f32]),
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let mut flex = into_flex(x)?;
    let n = flex.layout().shape().num_elements();
    if !(flex.is_unique() && flex.layout().contiguous_offsets() == Some((0, n))) {
        flex = flex.to_contiguous();
    }
    match flex.try_storage_mut::<f32>() {
        Some(values) => {
            kernel(&mut values[..n]);
            Ok(from_any(Box::new(flex)))
        }
        None => Err(from_any(Box::new(flex))),
    }
}

/// Exact GELU, `x Φ(x) = x (1 + erf(x / √2)) / 2`, with [`erf`] on flex (inference and training).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    on_flex_f32(x, |v| pulp::Arch::new().dispatch(GeluInPlace(v)))
        .or_else(crate::cpu_train::gelu)
        .unwrap_or_else(burn::tensor::activation::gelu)
}

/// Softmax over the last dimension, with [`exp`] on flex inference.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let len = x.dims()[D - 1];
    on_flex_f32(x, |v| pulp::Arch::new().dispatch(SoftmaxRows(v, len)))
        .unwrap_or_else(|x| burn::tensor::activation::softmax(x, D - 1))
}

/// The float32 values of `x` when it is a flex tensor, made contiguous (else `None`).
fn flex_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Option<FlexTensor> {
    let flex = into_flex(x).ok()?;
    Some(if flex.layout().contiguous_offsets().is_some() { flex } else { flex.to_contiguous() })
}

fn values(t: &FlexTensor) -> &[f32] {
    let (start, end) = t.layout().contiguous_offsets().unwrap_or((0, 0));
    &t.storage::<f32>()[start..end]
}

/// Shapes of one [`window_attention`] call.
#[derive(Clone, Copy, Debug)]
pub struct AttentionShape {
    /// Windows in the whole batch.
    pub windows: usize,
    /// Windows per image (the bias cycles through them; 1 when it is the same for all).
    pub bias_windows: usize,
    /// Heads.
    pub heads: usize,
    /// Tokens per window.
    pub tokens: usize,
    /// Channels per head.
    pub head_dim: usize,
}

impl AttentionShape {
    /// Whether the fused kernels have this shape: 49 tokens, a head width of 4, 8, 16, 32 or 64,
    /// and the windows a whole number of rounds through the biases.
    pub(crate) fn has_kernel(&self) -> bool {
        self.tokens == 49
            && matches!(self.head_dim, 4 | 8 | 16 | 32 | 64)
            && self.bias_windows > 0
            && self.windows.is_multiple_of(self.bias_windows)
    }
}

/// `softmax(scale q kᵀ + bias) v` for every window and head, heads merged: `qkv` is `[3, windows,
/// heads, tokens, head_dim]` (q, k, v contiguous), `bias` `[bias_windows, heads, tokens, tokens]`;
/// the result is `[windows * tokens, heads * head_dim]`. `None` unless the backend is flex without
/// autodiff and the shape is one the kernel has (49 tokens, a head width of 4, 8, 16, 32 or 64): the
/// caller then runs its burn ops. Each window's scores stay in registers and L1; windows run in
/// parallel on rayon's pool.
pub fn window_attention<B: Backend>(
    qkv: &Tensor<B, 2>,
    bias: &Tensor<B, 2>,
    shape: AttentionShape,
    scale: f32,
) -> Option<Tensor<B, 2>> {
    let AttentionShape { windows, bias_windows, heads, tokens, head_dim } = shape;
    if !shape.has_kernel() {
        return None;
    }
    let device = qkv.device();
    let (qkv_t, bias_t) = (flex_f32(qkv.clone())?, flex_f32(bias.clone())?);
    let (qkv_v, bias_v) = (values(&qkv_t), values(&bias_t));
    let per = tokens * head_dim;
    if qkv_v.len() != 3 * windows * heads * per || bias_v.len() != bias_windows * heads * tokens * tokens {
        return None;
    }
    let mut out = vec![0.0f32; windows * heads * per];
    let kernel = Attend { qkv: qkv_v, bias: bias_v, shape, scale };
    {
        use rayon::prelude::*;
        out.par_chunks_mut(heads * per).enumerate().for_each(|(w, dst)| {
            pulp::Arch::new().dispatch(AttendWindow { kernel: &kernel, window: w, out: dst });
        });
    }
    Some(Tensor::from_data(TensorData::new(out, [windows * tokens, heads * head_dim]), &device))
}

struct Attend<'a> {
    qkv: &'a [f32],
    bias: &'a [f32],
    shape: AttentionShape,
    scale: f32,
}

struct AttendWindow<'a> {
    kernel: &'a Attend<'a>,
    window: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for AttendWindow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        match self.kernel.shape.head_dim {
            4 if has_fma() => self.heads::<49, 64, 4, true>(),
            8 if has_fma() => self.heads::<49, 64, 8, true>(),
            16 if has_fma() => self.heads::<49, 64, 16, true>(),
            32 if has_fma() => self.heads::<49, 64, 32, true>(),
            _ if has_fma() => self.heads::<49, 64, 64, true>(),
            4 => self.heads::<49, 64, 4, false>(),
            8 => self.heads::<49, 64, 8, false>(),
            16 => self.heads::<49, 64, 16, false>(),
            32 => self.heads::<49, 64, 32, false>(),
            _ => self.heads::<49, 64, 64, false>(),
        }
    }
}

impl AttendWindow<'_> {
    /// All heads of one window, `L` tokens of `P` channels per head; score rows are padded to `W`
    /// (whole vectors, held in registers), the padding with zero keys and a -inf bias.
    #[inline(always)]
    fn heads<const L: usize, const W: usize, const P: usize, const FMA: bool>(mut self) {
        let Attend { qkv, bias, shape, scale } = *self.kernel;
        let (w, nh) = (self.window, shape.heads);
        let part = shape.windows * nh * L * P;
        for h in 0..nh {
            let at = (w * nh + h) * L * P;
            let (q, k, v) = (&qkv[at..at + L * P], &qkv[part + at..part + at + L * P], &qkv[2 * part + at..][..L * P]);
            let b_at = ((w % shape.bias_windows) * nh + h) * L * L;
            let bias = &bias[b_at..b_at + L * L];
            let kt = transposed::<W, P>(k);
            // rows in pairs, so that the score updates form 8 independent FMA chains
            for i in (0..L - 1).step_by(2) {
                self.rows::<L, W, P, 2, FMA>(q, &kt, bias, v, scale, i, h);
            }
            if L % 2 == 1 {
                self.rows::<L, W, P, 1, FMA>(q, &kt, bias, v, scale, L - 1, h);
            }
        }
    }

    /// Output rows `i..i + R` of head `h`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn rows<const L: usize, const W: usize, const P: usize, const R: usize, const FMA: bool>(
        &mut self,
        q: &[f32],
        kt: &[[f32; W]; P],
        bias: &[f32],
        v: &[f32],
        scale: f32,
        i: usize,
        h: usize,
    ) {
        let nh = self.kernel.shape.heads;
        let mut s = [[f32::NEG_INFINITY; W]; R];
        for (r, sr) in s.iter_mut().enumerate() {
            sr[..L].copy_from_slice(&bias[(i + r) * L..(i + r + 1) * L]);
        }
        add_products::<W, P, R, FMA>(&mut s, &q[i * P..(i + R) * P], kt, scale);
        for (r, sr) in s.iter_mut().enumerate() {
            let o = softmax_times_v::<L, W, P, FMA>(sr, v);
            // heads merged: token t's row holds head h at channels h*P..(h+1)*P
            let t = i + r;
            self.out[(t * nh + h) * P..(t * nh + h + 1) * P].copy_from_slice(&o);
        }
    }
}

/// `softmax(s) v` for one row of scores `s` (overwritten by the probabilities) and `v` `[L, P]`.
#[inline(always)]
fn softmax_times_v<const L: usize, const W: usize, const P: usize, const FMA: bool>(
    s: &mut [f32; W],
    v: &[f32],
) -> [f32; P] {
    softmax_padded::<L, W, FMA>(s);
    weighted_rows::<L, P, FMA>(&s[..L], v)
}

/// `m` `[L, P]` (row-major, `L <= W`) transposed into `[P, W]`, the padding zero.
#[inline(always)]
pub(crate) fn transposed<const W: usize, const P: usize>(m: &[f32]) -> [[f32; W]; P] {
    let mut t = [[0.0f32; W]; P];
    for (j, row) in m.chunks_exact(P).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            t[c][j] = x;
        }
    }
    t
}

/// `s_r += scale a_r mᵀ` for `R` rows `a` (`[R, P]`) and `mᵀ` `[P, W]`: the rows together, so
/// that two rows form 8 independent FMA chains.
#[inline(always)]
pub(crate) fn add_products<const W: usize, const P: usize, const R: usize, const FMA: bool>(
    s: &mut [[f32; W]; R],
    a: &[f32],
    mt: &[[f32; W]; P],
    scale: f32,
) {
    for (c, mt_c) in mt.iter().enumerate() {
        for (r, sr) in s.iter_mut().enumerate() {
            let x = a[r * P + c] * scale;
            for (sj, &mj) in sr.iter_mut().zip(mt_c) {
                *sj = madd::<FMA>(x, mj, *sj);
            }
        }
    }
}

/// Softmax of the first `L` scores of `s` in place, the padding set to 0.
#[inline(always)]
pub(crate) fn softmax_padded<const L: usize, const W: usize, const FMA: bool>(s: &mut [f32; W]) {
    let max = reduce(s, f32::NEG_INFINITY, max);
    for sj in s.iter_mut() {
        *sj = softmax_weight::<FMA>(*sj - max);
    }
    s[L..].fill(0.0);
    let inv = 1.0 / reduce(s, 0.0, |a, b| a + b);
    for sj in s[..L].iter_mut() {
        *sj *= inv;
    }
}

/// `Σ_j weights_j rows_j` for `L` weights and `rows` `[L, P]`, in two interleaved partial sums so
/// that the FMAs do not wait on each other.
#[inline(always)]
pub(crate) fn weighted_rows<const L: usize, const P: usize, const FMA: bool>(
    weights: &[f32],
    rows: &[f32],
) -> [f32; P] {
    let (mut o0, mut o1) = ([0.0f32; P], [0.0f32; P]);
    for (wj, rj) in weights[..L].chunks_exact(2).zip(rows.chunks_exact(2 * P)) {
        for c in 0..P {
            o0[c] = madd::<FMA>(wj[0], rj[c], o0[c]);
            o1[c] = madd::<FMA>(wj[1], rj[P + c], o1[c]);
        }
    }
    if L % 2 == 1 {
        let a = weights[L - 1];
        for c in 0..P {
            o0[c] = madd::<FMA>(a, rows[(L - 1) * P + c], o0[c]);
        }
    }
    for c in 0..P {
        o0[c] += o1[c];
    }
    o0
}

pub(crate) struct GeluInPlace<'a>(pub(crate) &'a mut [f32]);

impl pulp::WithSimd for GeluInPlace<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        if has_fma() {
            self.0.iter_mut().for_each(|v| *v = gelu_value::<true>(*v));
        } else {
            self.0.iter_mut().for_each(|v| *v = gelu_value::<false>(*v));
        }
    }
}

struct SoftmaxRows<'a>(&'a mut [f32], usize);

impl pulp::WithSimd for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self(values, len) = self;
        if len == 0 {
            return;
        }
        if has_fma() { softmax_rows::<true>(values, len) } else { softmax_rows::<false>(values, len) }
    }
}

/// Softmax of each `len`-long row of `values`, in place.
#[inline(always)]
fn softmax_rows<const FMA: bool>(values: &mut [f32], len: usize) {
    {
        for row in values.chunks_exact_mut(len) {
            // separate passes, the reductions over LANES partial results, so that each vectorises
            let max = reduce(row, f32::NEG_INFINITY, max);
            for v in row.iter_mut() {
                *v = softmax_weight::<FMA>(*v - max);
            }
            let inv = 1.0 / reduce(row, 0.0, |a, b| a + b);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// The larger of `a` and `b` as one compare and select. `f32::max` (IEEE maxNum: a NaN operand
/// loses) does not vectorise here and compiled to a chain of scalar `vmaxss`, which took most of
/// the attention kernel's time. With a NaN operand this returns `b`; a row of scores holding a NaN
/// still ends as NaN, because `exp` and the sum see every score.
#[inline(always)]
pub(crate) fn max(a: f32, b: f32) -> f32 {
    if a >= b { a } else { b }
}

/// Partial results per lane: a float reduction written as one running value cannot vectorise.
const LANES: usize = 16;

/// `values` folded by `op` from `init`, over [`LANES`] partial results combined at the end.
#[inline(always)]
pub(crate) fn reduce(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = op(*a, v);
        }
    }
    // pairwise across the lanes: four dependent steps instead of sixteen
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] = op(acc[i], acc[i + width]);
        }
        width /= 2;
    }
    let mut out = acc[0];
    for &v in rest {
        out = op(out, v);
    }
    out
}

/// Whether the CPU has fused multiply-add: the kernels then use `mul_add`, which compiles to one
/// instruction inside pulp's AVX2 and AVX-512 contexts (Rust never fuses `a * b + c` by itself).
#[inline(always)]
pub(crate) fn has_fma() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// `a * b + c`, fused when `FMA`.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// Exact GELU of one float32 value (see [`erf`]).
#[inline(always)]
fn gelu_value<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf::<FMA>(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf` in float32: `x P(x²) / Q(x²)` on `x` clamped to `[-4, 4]` (outside it erf is ±1 in
/// float32), with the monomial coefficients of Eigen's and XLA's float32 `erf`; within 5e-7 of the
/// exact value. Branch-free, so a loop of it vectorises.
#[inline(always)]
pub(crate) fn erf<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_6e-3, -1.609_603_3e-2] {
        p = madd::<FMA>(p, x2, c);
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = madd::<FMA>(q, x2, c);
    }
    x * p / q
}

/// `exp(d)` for a softmax logit `d` below its row's maximum, and 0 below -64. The weights cut off
/// are under 1.7e-28 against the maximum's 1, so the row's sum and result are unchanged in float32,
/// but they no longer produce subnormal floats: Swin's shift mask (-100, as in the official code)
/// gives weights near e^-100, and every multiply-add with a subnormal operand or result takes a
/// microcode assist on x86, which made the shifted blocks' attention about ten times slower.
#[inline(always)]
pub(crate) fn softmax_weight<const FMA: bool>(d: f32) -> f32 {
    if d < -64.0 { 0.0 } else { exp::<FMA>(d) }
}

/// `exp` in float32 for `x <= 0` up to rounding (softmax's shifted logits; larger `x` is clamped at
/// 88): `2^n e^r` with `n = round(x / ln 2)`, `|r| <= ln 2 / 2` split in two parts, and Cephes'
/// degree-5 polynomial for `e^r`; within 3e-7 relative of the exact value. Below -87.3 (where the
/// exact value is under float32's smallest normal) it returns 0, never a subnormal. Branch-free
/// (the cut-off is a select).
#[inline(always)]
pub(crate) fn exp<const FMA: bool>(x: f32) -> f32 {
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = madd::<FMA>(n, 2.121_944_4e-4, madd::<FMA>(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4_f32;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = madd::<FMA>(p, r, c);
    }
    let e_r = madd::<FMA>(p, r * r, r + 1.0);
    let e = e_r * f32::from_bits(((n as i32 + 127) << 23) as u32);
    if underflow { 0.0 } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use burn::tensor::TensorData;

    #[test]
    fn erf_is_within_5e7_of_the_exact_value() {
        let mut worst = 0.0f64;
        for i in -600_000..=600_000 {
            let x = i as f32 * 1e-5;
            let exact = libm::erf(x as f64);
            worst = worst.max((erf::<false>(x) as f64 - exact).abs()).max((erf::<true>(x) as f64 - exact).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
        assert_eq!(erf::<false>(0.0), 0.0);
        assert_eq!(erf::<true>(9.0), erf::<true>(4.0));
        assert!(erf::<false>(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_3e7_relative_on_softmax_inputs() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let x = -(i as f32) * 8.7e-5;
            let exact = libm::exp(x as f64);
            for e in [exp::<false>(x), exp::<true>(x)] {
                worst = worst.max((e as f64 - exact).abs() / exact);
            }
        }
        assert!(worst < 3e-7, "max relative exp error {worst:e}");
        assert_eq!(exp::<true>(0.0), 1.0);
        assert_eq!(exp::<false>(-100.0), 0.0);
        assert!(exp::<true>(-87.0) >= f32::MIN_POSITIVE && softmax_weight::<true>(-100.0) == 0.0);
    }

    fn max_difference<const D: usize>(a: Tensor<TestBackend, D>, b: Tensor<TestBackend, D>) -> f32 {
        let a: Vec<f32> = a.into_data().to_vec().unwrap_or_default();
        let b: Vec<f32> = b.into_data().to_vec().unwrap_or_default();
        assert_eq!(a.len(), b.len());
        // a NaN counts as the largest difference (f32::max would drop it)
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
    }

    #[test]
    fn flex_kernels_equal_burns_on_views_and_copies() {
        let dev = Default::default();
        let vals: Vec<f32> = (0..240).map(|i| (i as f32 - 120.0) * 0.07).collect();
        let x = Tensor::<TestBackend, 3>::from_data(TensorData::new(vals, [4, 6, 10]), &dev);
        // an owned contiguous tensor, a shared one, and a permuted view
        for input in [x.clone() * 1.0, x.clone(), x.clone().swap_dims(1, 2)] {
            let d = max_difference(burn::tensor::activation::gelu(input.clone()), gelu(input.clone()));
            assert!(d < 2e-6, "max |gelu difference| {d:e}");
            let d = max_difference(burn::tensor::activation::softmax(input.clone(), 2), softmax_last(input));
            assert!(d < 1e-7, "max |softmax difference| {d:e}");
        }
        // masked rows (-100 offsets as in the official code, and -inf) and the source of the
        // shared tensor stay as they were
        let inf = f32::NEG_INFINITY;
        let rows = vec![0.5f32, -99.5, 0.0, -100.0, 0.5, inf, 0.0, inf];
        let masked = Tensor::<TestBackend, 2>::from_data(TensorData::new(rows, [2, 4]), &dev);
        assert!(max_difference(burn::tensor::activation::softmax(masked.clone(), 1), softmax_last(masked)) < 1e-7);
        let again: Vec<f32> = x.into_data().to_vec().unwrap_or_default();
        assert_eq!(again[0], -120.0 * 0.07);
    }
}
