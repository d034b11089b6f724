//! The exact GELU of [`crate::cpu`] for training: a burn-autodiff operation on flex with its own
//! backward pass, one vectorised pass per direction. Under `Autodiff<Flex>` burn 0.21 runs GELU's
//! forward and backward one scalar libm `erf` (and `exp`) at a time. The function returns the input
//! untouched when it is not a float32 `Autodiff<Flex>` tensor, and the caller then runs burn's ops.
//! (The same treatment for the attention softmax was measured and made the training step slower,
//! 3.5 against 3.8 img/s; the whole window attention is one operation in
//! [`crate::cpu_train_attention`] instead.)

use std::any::Any;
use std::f32::consts::FRAC_1_SQRT_2;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

use crate::cpu::{GeluInPlace, erf, exp, from_any, has_fma, madd};

/// A float tensor of `Autodiff<Flex>` (the checkpointing strategy is not part of the type).
type AdTensor = <Autodiff<Flex> as BackendTypes>::FloatTensorPrimitive;

/// `x` as a float32 `Autodiff<Flex>` tensor, or `x` handed back when it is not one.
pub(crate) fn into_autodiff_flex<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<AdTensor, Tensor<B, D>> {
    let prim = match x.into_primitive() {
        TensorPrimitive::Float(prim) => prim,
        quantized => return Err(Tensor::from_primitive(quantized)),
    };
    let boxed: Box<dyn Any> = Box::new(prim);
    match boxed.downcast::<AdTensor>() {
        Ok(t) if t.primitive.dtype() == DType::F32 => Ok(*t),
        Ok(t) => Err(from_any(t)),
        Err(other) => Err(from_any(other)),
    }
}

/// `x` made contiguous, with its values.
pub(crate) fn contiguous(x: FlexTensor) -> FlexTensor {
    if x.layout().contiguous_offsets().is_some() { x } else { x.to_contiguous() }
}

pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    let (start, end) = t.layout().contiguous_offsets().unwrap_or((0, 0));
    &t.storage::<f32>()[start..end]
}

/// A new contiguous float32 flex tensor of `shape` from `values`.
pub(crate) fn flex_from(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// `grad` made unique and contiguous, then changed in place by `kernel` (given `grad`'s values).
fn update(grad: FlexTensor, kernel: impl FnOnce(&mut [f32])) -> FlexTensor {
    let n = grad.layout().shape().num_elements();
    let mut grad = if grad.is_unique() && grad.layout().contiguous_offsets() == Some((0, n)) {
        grad
    } else {
        grad.to_contiguous()
    };
    kernel(&mut grad.storage_mut::<f32>()[..n]);
    grad
}

/// Exact GELU with its derivative `Φ(x) + x φ(x)` as the backward pass; `Err` hands `x` back.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let x = into_autodiff_flex(x)?;
    let input = contiguous(x.primitive.clone());
    let shape = input.layout().shape().to_vec();
    let mut out = values(&input).to_vec();
    pulp::Arch::new().dispatch(GeluInPlace(&mut out));
    let out = flex_from(out, shape);
    let out = match GeluBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(input, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(from_any(Box::new(out)))
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input, contiguous.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            update(grad, |g| pulp::Arch::new().dispatch(GeluGrad { x: values(&x), grad: g }))
        });
    }
}

struct GeluGrad<'a> {
    x: &'a [f32],
    grad: &'a mut [f32],
}

impl pulp::WithSimd for GeluGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        // plain loops: an iterator adaptor that is not inlined would lose the target features
        if has_fma() {
            for (g, &x) in self.grad.iter_mut().zip(self.x) {
                *g = gelu_grad_value::<true>(x, *g);
            }
        } else {
            for (g, &x) in self.grad.iter_mut().zip(self.x) {
                *g = gelu_grad_value::<false>(x, *g);
            }
        }
    }
}

/// `g d/dx[x Φ(x)] = g (Φ(x) + x φ(x))`, with [`erf`] and [`exp`] (the exponent is never positive).
#[inline(always)]
fn gelu_grad_value<const FMA: bool>(x: f32, g: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf::<FMA>(x * FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * exp::<FMA>(-0.5 * x * x);
    g * madd::<FMA>(x, pdf, cdf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    type Ad = Autodiff<Flex>;

    /// Values and input gradients of `f` (summed against fixed weights) by burn's ops and by ours.
    fn both(
        x: Tensor<Flex, 3>,
        ours: &dyn Fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>,
        burns: &dyn Fn(Tensor<Ad, 3>) -> Tensor<Ad, 3>,
    ) -> [(Vec<f32>, Vec<f32>); 2] {
        let dev = Default::default();
        let w = Tensor::<Flex, 3>::random(x.dims(), Distribution::Normal(0.0, 1.0), &dev);
        [ours, burns].map(|f| {
            let xa = Tensor::<Ad, 3>::from_inner(x.clone()).require_grad();
            // a strided view as the input
            let y = f(xa.clone().swap_dims(1, 2)).swap_dims(1, 2);
            let grads = (y.clone() * Tensor::from_inner(w.clone())).sum().backward();
            let gx = xa.grad(&grads).map(|g| g.into_data().to_vec().unwrap_or_default()).unwrap_or_default();
            (y.into_data().to_vec().unwrap_or_default(), gx)
        })
    }

    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        assert!(!a.is_empty());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) })
    }

    #[test]
    fn gelu_trains_like_burns_op() {
        let dev = Default::default();
        let x = Tensor::<Flex, 3>::random([3, 7, 49], Distribution::Normal(0.0, 3.0), &dev);
        let [(y, g), (want_y, want_g)] =
            both(x, &|t| gelu(t).unwrap_or_else(|_| panic!("not Autodiff<Flex>")), &burn::tensor::activation::gelu);
        assert!(worst(&y, &want_y) < 2e-6 && worst(&g, &want_g) < 2e-6, "gelu");
    }

    #[test]
    fn other_backends_are_handed_back() {
        let x = Tensor::<Flex, 2>::ones([2, 3], &Default::default());
        assert!(gelu(x).is_err());
    }
}
