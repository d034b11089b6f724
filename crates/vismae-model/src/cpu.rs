//! Vectorised float32 kernels for inference on burn's flex CPU backend: exact GELU and the softmax
//! of attention rows. burn 0.21's flex evaluates `erf` and `exp` one scalar at a time (about an
//! eighth of a Swin-UNet forward pass together). These functions stay backend-generic: on flex
//! without autodiff they map the tensor's values in place, compiled for each instruction set pulp
//! dispatches to at run time; on every other backend, and under autodiff, they call burn's op.

use std::any::Any;

use burn::tensor::{DType, Tensor, TensorPrimitive, backend::Backend};
use burn_flex::FlexTensor;

/// Runs `kernel` on the values of `x` (row-major, owned, contiguous) when `x` is a float32 flex
/// tensor, and returns `x` untouched as the error otherwise.
fn on_flex_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    kernel: impl FnOnce(&mut [f32]),
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let back = |boxed: Box<dyn Any>| match boxed.downcast::<B::FloatTensorPrimitive>() {
        Ok(p) => Tensor::from_primitive(TensorPrimitive::Float(*p)),
        Err(_) => unreachable!("the primitive came from this backend"),
    };
    let TensorPrimitive::Float(prim) = x.into_primitive() else {
        unreachable!("a float tensor's primitive is a float primitive")
    };
    let boxed: Box<dyn Any> = Box::new(prim);
    let mut flex = match boxed.downcast::<FlexTensor>() {
        Ok(flex) if flex.dtype() == DType::F32 => *flex,
        Ok(flex) => return Err(back(flex)),
        Err(other) => return Err(back(other)),
    };
    let n = flex.layout().shape().num_elements();
    if !(flex.is_unique() && flex.layout().contiguous_offsets() == Some((0, n))) {
        flex = flex.to_contiguous();
    }
    match flex.try_storage_mut::<f32>() {
        Some(values) => {
            kernel(&mut values[..n]);
            Ok(back(Box::new(flex)))
        }
        None => Err(back(Box::new(flex))),
    }
}

/// Exact GELU, `x Φ(x) = x (1 + erf(x / √2)) / 2`, with [`erf_f32`] on flex inference.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    on_flex_f32(x, |v| pulp::Arch::new().dispatch(GeluInPlace(v))).unwrap_or_else(burn::tensor::activation::gelu)
}

/// Softmax over the last dimension, with [`exp_f32`] on flex inference.
pub fn softmax_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let len = x.dims()[D - 1];
    on_flex_f32(x, |v| pulp::Arch::new().dispatch(SoftmaxRows(v, len)))
        .unwrap_or_else(|x| burn::tensor::activation::softmax(x, D - 1))
}

struct GeluInPlace<'a>(&'a mut [f32]);

impl pulp::WithSimd for GeluInPlace<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for v in self.0.iter_mut() {
            *v = gelu_f32(*v);
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
        for row in values.chunks_exact_mut(len) {
            // separate passes, the reductions over LANES partial results, so that each vectorises
            let max = reduce(row, f32::NEG_INFINITY, f32::max);
            for v in row.iter_mut() {
                *v = exp_f32(*v - max);
            }
            let inv = 1.0 / reduce(row, 0.0, |a, b| a + b);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

/// Partial results per lane: a float reduction written as one running value cannot vectorise.
const LANES: usize = 16;

/// `values` folded by `op` from `init`, over [`LANES`] partial results combined at the end.
#[inline(always)]
fn reduce(values: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = op(*a, v);
        }
    }
    let mut out = acc.into_iter().fold(init, &op);
    for &v in rest {
        out = op(out, v);
    }
    out
}

/// Exact GELU of one float32 value (see [`erf_f32`]).
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf` in float32: `x P(x²) / Q(x²)` on `x` clamped to `[-4, 4]` (outside it erf is ±1 in
/// float32), with the monomial coefficients of Eigen's and XLA's float32 `erf`; within 5e-7 of the
/// exact value. Branch-free, so a loop of it vectorises.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [2.770_681_4e-8, -2.101_024e-6, -5.692_506_4e-5, -7.349_906_3e-4, -2.954_600e-3, -1.609_603_3e-2] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

/// `exp` in float32 for `x <= 0` up to rounding (softmax's shifted logits; larger `x` is clamped at
/// 88): `2^n e^r` with `n = round(x / ln 2)`, `|r| <= ln 2 / 2` split in two parts, and Cephes'
/// degree-5 polynomial for `e^r`; within 2 ulp of the exact value. Below -87.3 (where the exact
/// value is under float32's smallest normal) it returns 2^-126. Branch-free, so it vectorises.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) << 23) as u32)
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
            worst = worst.max((erf_f32(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst:e}");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(9.0), erf_f32(4.0));
        assert!(erf_f32(f32::NAN).is_nan());
    }

    #[test]
    fn exp_is_within_3e7_relative_on_softmax_inputs() {
        let mut worst = 0.0f64;
        for i in 0..=1_000_000 {
            let x = -(i as f32) * 8.7e-5;
            let exact = libm::exp(x as f64);
            worst = worst.max((exp_f32(x) as f64 - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "max relative exp error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-100.0) > 0.0 && exp_f32(-100.0) < 1.3e-38);
    }

    fn max_difference<const D: usize>(a: Tensor<TestBackend, D>, b: Tensor<TestBackend, D>) -> f32 {
        let a: Vec<f32> = a.into_data().to_vec().unwrap_or_default();
        let b: Vec<f32> = b.into_data().to_vec().unwrap_or_default();
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
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
        // a masked row (-100 offsets) and the source of the shared tensor stay as they were
        let masked =
            Tensor::<TestBackend, 2>::from_data(TensorData::new(vec![0.5f32, -99.5, 0.0, -100.0], [1, 4]), &dev);
        assert!(max_difference(burn::tensor::activation::softmax(masked.clone(), 1), softmax_last(masked)) < 1e-7);
        let again: Vec<f32> = x.into_data().to_vec().unwrap_or_default();
        assert_eq!(again[0], -120.0 * 0.07);
    }
}
