//! Network input tensors from prepared images: each image's planes finished by the
//! [`Preprocess`] spec (replicated to the input channels, then normalised) and stacked into a
//! batch. The one place where host pixels become a tensor, for every run kind.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use vismae_run::Preprocess;

/// `[B, in_chans, S, S]` from `b` images of `planes` planar `S x S` planes each, laid end to end
/// in `data` (augmentation already applied).
pub fn batch<B: Backend>(spec: &Preprocess, data: &[f32], b: usize, planes: usize, device: &B::Device) -> Tensor<B, 4> {
    let n = spec.size;
    let per = planes * n * n;
    let mut out = Vec::with_capacity(b * spec.in_chans * n * n);
    for img in data.chunks(per.max(1)).take(b) {
        out.extend(spec.finish(img.to_vec(), planes));
    }
    Tensor::from_data(TensorData::new(out, [b, spec.in_chans, n, n]), device)
}

/// `[B, in_chans, S, S]` from `b` images already finished (channels replicated and normalised,
/// as patches cut from a finished slice are).
pub fn finished<B: Backend>(data: &[f32], b: usize, in_chans: usize, n: usize, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(data[..b * in_chans * n * n].to_vec(), [b, in_chans, n, n]), device)
}
