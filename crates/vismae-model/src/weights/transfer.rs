//! Pre-trained MAE weights into the downstream networks (SPEC §3, §9.1): by name and shape, as
//! VIS-MAE does (its decoder becomes the U-Net decoder), or Swin-MAE/Swin-Unet style, where the
//! encoder stages are copied into the mirrored decoder stages.

use super::StateDict;

/// How the Swin-UNet decoder blocks are initialised from an MAE state dict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecoderInit {
    /// The MAE decoder's `layers_up.*` by name (VIS-MAE's `misc.load_model`).
    #[default]
    MaeDecoder,
    /// Encoder `layers.{i}.blocks.*` copied to `layers_up.{n-2-i}.blocks.*` (Swin-MAE issue #8).
    MirroredEncoder,
    /// Decoder left at initialisation (`misc_update.load_model`).
    Scratch,
}

/// Applies a [`DecoderInit`] to an MAE state dict before it is loaded into a Swin-UNet with
/// `num_stages` stages.
pub fn mirror_encoder_into_decoder(sd: &StateDict, num_stages: usize, init: DecoderInit) -> StateDict {
    if init == DecoderInit::MaeDecoder {
        return sd.clone();
    }
    let mut out = StateDict::default();
    for (k, v) in &sd.tensors {
        if !k.starts_with("layers_up.") {
            out.tensors.insert(k.clone(), v.clone());
        }
    }
    if init == DecoderInit::MirroredEncoder {
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
