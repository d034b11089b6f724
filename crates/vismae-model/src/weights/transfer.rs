//! Pre-trained MAE weights into the downstream networks (SPEC §3, §9.1): by name and shape, as
//! VIS-MAE does (its decoder becomes the U-Net decoder), or Swin-MAE/Swin-Unet style, where the
//! encoder stages are copied into the mirrored decoder stages.

use super::StateDict;

pub use vismae_run::DecoderInit;

/// Applies a [`DecoderInit`] to an MAE state dict before it is loaded into a Swin-UNet with
/// `num_stages` stages.
pub fn mirror_encoder_into_decoder(sd: &StateDict, num_stages: usize, init: DecoderInit) -> StateDict {
    if init == DecoderInit::Mae {
        return sd.clone();
    }
    let mut out = StateDict::default();
    for (k, v) in &sd.tensors {
        if !k.starts_with("layers_up.") {
            out.tensors.insert(k.clone(), v.clone());
        }
    }
    if init == DecoderInit::Mirrored {
        for i in 0..num_stages.saturating_sub(1) {
            let from = format!("layers.{i}.blocks.");
            let to = format!("layers_up.{}.blocks.", num_stages - 2 - i);
            for (k, v) in &sd.tensors {
                if let Some(rest) = k.strip_prefix(&from) {
                    out.tensors.insert(format!("{to}{rest}"), v.clone());
                }
            }
        }
    }
    out
}

/// A state dict whose patch embedding is adapted to `in_chans` input channels: every new channel
/// gets the sum of the file's channel kernels divided by `in_chans`, so a grey image replicated
/// into every channel (what VIS-MAE pre-trains on) gives exactly the embedding it gave before, and
/// several stacked channels (nnU-Net modalities) start from the mean grey response. For one channel
/// this is timm's `adapt_input_conv` (the sum); for more, timm repeats the kernels instead, which
/// keeps colour detail but not the response to replicated grey. Returns the note for the transfer
/// report, or `None` when nothing needed adapting.
pub fn adapt_input_channels(sd: &mut StateDict, in_chans: usize) -> Option<String> {
    let key = "patch_embed.proj.weight";
    let t = sd.tensors.get_mut(key)?;
    let [out, have, kh, kw] = t.shape[..] else { return None };
    if have == in_chans || have == 0 {
        return None;
    }
    let super::Values::F32(v) = &t.values else { return None };
    let k = kh * kw;
    let mut new = vec![0f32; out * in_chans * k];
    for o in 0..out {
        for c in 0..in_chans {
            for i in 0..k {
                new[(o * in_chans + c) * k + i] =
                    (0..have).map(|h| v[(o * have + h) * k + i]).sum::<f32>() / in_chans as f32;
            }
        }
    }
    t.values = super::Values::F32(new);
    t.shape = vec![out, in_chans, kh, kw];
    Some(format!(
        "{key}: adapted from {have} to {in_chans} input channels (each the sum of the file's kernels / {in_chans})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{TensorEntry, Values};

    #[test]
    fn adapted_embedding_of_replicated_grey_is_unchanged() {
        // one output, 3 channels of a 1x1 kernel: w = (1, 2, 3); grey g in all 3 gives 6g
        let mut sd = StateDict::default();
        sd.tensors.insert(
            "patch_embed.proj.weight".into(),
            TensorEntry { shape: vec![1, 3, 1, 1], values: Values::F32(vec![1.0, 2.0, 3.0]) },
        );
        let mut two = sd.clone();
        assert!(adapt_input_channels(&mut two, 2).is_some_and(|n| n.contains("3 to 2")));
        let Values::F32(w) = &two.tensors["patch_embed.proj.weight"].values else { unreachable!() };
        assert_eq!(two.tensors["patch_embed.proj.weight"].shape, vec![1, 2, 1, 1]);
        assert_eq!(w, &vec![3.0, 3.0]); // replicated grey g: 3g + 3g = 6g, as before
        let mut one = sd.clone();
        adapt_input_channels(&mut one, 1);
        assert_eq!(one.tensors["patch_embed.proj.weight"].values, Values::F32(vec![6.0]));
        assert!(adapt_input_channels(&mut sd, 3).is_none());
    }
}
