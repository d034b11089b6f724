//! Gradients as one flat bucket: every parameter's gradient, in the order of the parameters'
//! module paths (the same on every node, whatever the random `ParamId`s of its process), then a
//! presence flag per parameter and any extra values (the step's losses), in one tensor; and back.
//! Also a fingerprint of a model's weights in the same order.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

/// What is done with each float parameter, given its key: its module path and its position
/// among the parameters of that path (the same in every process, unlike the `ParamId`).
trait ByPath<B: AutodiffBackend> {
    fn param<const D: usize>(&mut self, key: String, param: &Param<Tensor<B, D>>);
}

/// A module visitor that tracks the path and hands each float parameter to `inner` with its key.
struct Walk<T> {
    stack: Vec<String>,
    ordinal: HashMap<String, usize>,
    inner: T,
}

impl<T> Walk<T> {
    /// `inner` called for every float parameter of `model`; returns `inner`.
    fn over<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, inner: T) -> T
    where
        T: ByPath<B>,
    {
        let mut w = Walk { stack: Vec::new(), ordinal: HashMap::new(), inner };
        model.visit(&mut w);
        w.inner
    }
}

impl<B: AutodiffBackend, T: ByPath<B>> ModuleVisitor<B> for Walk<T> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.stack.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let joined = self.stack.join(".");
        let n = self.ordinal.entry(joined.clone()).or_insert(0);
        *n += 1;
        let key = format!("{joined}#{}", *n - 1);
        self.inner.param(key, param);
    }
}

/// Where each parameter's gradient lies in a bucket.
pub(crate) struct Layout {
    /// key -> (offset, length, index among the parameters) in the sorted order.
    entries: HashMap<String, (usize, usize, usize)>,
    /// Gradient values in all.
    values: usize,
    /// Extra values at the end.
    extra: usize,
}

struct Gather<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    parts: Vec<(String, Tensor<B::InnerBackend, 1>, bool)>,
    device: B::Device,
}

impl<B: AutodiffBackend> ByPath<B> for Gather<'_, B> {
    fn param<const D: usize>(&mut self, k: String, param: &Param<Tensor<B, D>>) {
        let numel = param.shape().num_elements();
        let (flat, present) = match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(g) => (g.reshape([numel]), true),
            None => (Tensor::zeros([numel], &self.device), false),
        };
        self.parts.push((k, flat, present));
    }
}

/// `grads` of `model` and `extra` as one tensor on `device`.
pub(crate) fn pack<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &GradientsParams,
    extra: &[f32],
    device: &B::Device,
) -> (Tensor<B::InnerBackend, 1>, Layout) {
    let mut parts = Walk::over(model, Gather::<B> { grads, parts: Vec::new(), device: device.clone() }).parts;
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = HashMap::new();
    let mut offset = 0;
    let mut presence = Vec::with_capacity(parts.len());
    let mut tensors = Vec::with_capacity(parts.len() + 1);
    for (i, (k, t, present)) in parts.into_iter().enumerate() {
        let n = t.shape().num_elements();
        entries.insert(k, (offset, n, i));
        offset += n;
        presence.push(if present { 1.0f32 } else { 0.0 });
        tensors.push(t);
    }
    presence.extend_from_slice(extra);
    let tail = presence.len();
    tensors.push(Tensor::from_data(TensorData::new(presence, [tail]), device));
    let layout = Layout { values: offset, extra: extra.len(), entries };
    (Tensor::cat(tensors, 0), layout)
}

struct Scatter<'a, B: AutodiffBackend> {
    flat: &'a Tensor<B::InnerBackend, 1>,
    layout: &'a Layout,
    presence: &'a [f32],
    grads: GradientsParams,
}

impl<B: AutodiffBackend> ByPath<B> for Scatter<'_, B> {
    fn param<const D: usize>(&mut self, k: String, param: &Param<Tensor<B, D>>) {
        if let Some(&(offset, n, i)) = self.layout.entries.get(&k)
            && self.presence.get(i).is_some_and(|p| *p > 0.0)
        {
            let dims: [usize; D] = param.shape().dims();
            let g = self.flat.clone().narrow(0, offset, n).reshape(dims);
            self.grads.register::<B::InnerBackend, D>(param.id, g);
        }
    }
}

/// The gradients (of the parameters some node had one for) and the extra values of a bucket.
pub(crate) fn unpack<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    flat: Tensor<B::InnerBackend, 1>,
    layout: &Layout,
) -> (GradientsParams, Vec<f32>) {
    let params = layout.entries.len();
    let tail: Vec<f32> = flat
        .clone()
        .narrow(0, layout.values, params + layout.extra)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap_or_default();
    let (presence, extra) = tail.split_at(params.min(tail.len()));
    let grads = Walk::over(model, Scatter::<B> { flat: &flat, layout, presence, grads: GradientsParams::new() }).grads;
    (grads, extra.to_vec())
}

struct Hash {
    parts: Vec<(String, Vec<u8>)>,
}

impl<B: AutodiffBackend> ByPath<B> for Hash {
    fn param<const D: usize>(&mut self, k: String, param: &Param<Tensor<B, D>>) {
        let bytes = param.val().into_data().convert::<f32>().as_bytes().to_vec();
        self.parts.push((k, bytes));
    }
}

/// A hash of every weight of `model` with its path, in path order.
pub(crate) fn weights_hash<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M) -> blake3::Hash {
    let mut parts = Walk::over(model, Hash { parts: Vec::new() }).parts;
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = blake3::Hasher::new();
    for (k, bytes) in &parts {
        hasher.update(k.as_bytes());
        hasher.update(bytes);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Net<B: burn::tensor::backend::Backend> {
        a: Linear<B>,
        b: Linear<B>,
    }

    fn net(device: &<AB as burn::tensor::backend::BackendTypes>::Device) -> Net<AB> {
        Net { a: LinearConfig::new(3, 4).init(device), b: LinearConfig::new(4, 2).init(device) }
    }

    #[test]
    fn a_bucket_unpacks_into_the_gradients_it_packed_by_path_not_by_param_id() {
        let device = Default::default();
        let (one, two) = (net(&device), net(&device));
        let x = Tensor::<AB, 2>::from_data(TensorData::new(vec![0.5f32, -1.0, 2.0], [1, 3]), &device);
        let loss = one.b.forward(one.a.forward(x)).sum();
        let grads = GradientsParams::from_grads::<AB, _>(loss.backward(), &one);
        let (flat, layout) = pack::<AB, _>(&one, &grads, &[7.0, 8.0], &device);
        assert_eq!(flat.shape().num_elements(), 3 * 4 + 4 + 4 * 2 + 2 + 4 + 2);
        // another process's network: same paths, other ParamIds
        let (back, extra) = unpack::<AB, _>(&two, flat, &layout);
        assert_eq!(extra, vec![7.0, 8.0]);
        let before = grads.get::<Flex, 2>(one.b.weight.id).map(|t| t.into_data().to_vec::<f32>().unwrap_or_default());
        let after = back.get::<Flex, 2>(two.b.weight.id).map(|t| t.into_data().to_vec::<f32>().unwrap_or_default());
        assert!(before.is_some());
        assert_eq!(before, after);
        assert_eq!(back.len(), grads.len());
        assert_ne!(weights_hash::<AB, _>(&one), weights_hash::<AB, _>(&two));
        assert_eq!(weights_hash::<AB, _>(&one), weights_hash::<AB, _>(&one.clone()));
    }
}
