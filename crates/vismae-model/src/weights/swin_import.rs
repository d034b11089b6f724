//! Supervised Swin-T weights from the layouts users have, turned into the VIS-MAE key layout
//! (the paper's ImageNet and RadImageNet baselines; SPEC §9.4, §13):
//! - Microsoft's `swin_tiny_patch4_window7_224.pth` (`microsoft/Swin-Transformer`,
//!   `models/swin_transformer.py`): `{'model': state_dict}`, `layers.{0,1,2}.downsample.*` at the
//!   end of stages 0-2 (as VIS-MAE), `head.*`, persistent `relative_position_index` in every block
//!   and `attn_mask` in the shifted blocks. Recognised by its `attn_mask` buffers.
//! - the current timm / Hugging Face hub layout (`timm/models/swin_transformer.py`): PatchMerging
//!   at the start of stages 1-3 (`layers.{1,2,3}.downsample.*`), `head.fc.*`, and no index
//!   buffers (the 2023 hub files still carry them). Recognised by `head.fc.weight` or a stage-3
//!   downsample (checked first: those hub files have `attn_mask` buffers too).
//!
//! Both become VIS-MAE classifier keys: the downsample keys of timm move one stage down, `head.fc`
//! becomes `head`, the buffers are dropped (VIS-MAE recomputes the index). No tensor changes: the
//! sub-patch order of PatchMerging (`x0, x1, x2, x3`), the qkv layout and the relative index are
//! the same in all three. What does differ in behaviour is reported, not hidden (see [`NOTES`]).

use super::{StateDict, TensorEntry};
use vismae_run::{Channels, InputNorm, Intensity, ModelCard, ModelKind, Origin, Preprocess};

/// The layouts a Swin state dict comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwinLayout {
    /// VIS-MAE's own (the official VIS-MAE code and vismae).
    Vismae,
    /// Microsoft's original Swin Transformer.
    Microsoft,
    /// timm / the Hugging Face hub.
    Timm,
}

impl SwinLayout {
    /// The name used in cards and messages.
    pub fn name(self) -> &'static str {
        match self {
            SwinLayout::Vismae => "vismae",
            SwinLayout::Microsoft => "microsoft-swin",
            SwinLayout::Timm => "timm-swin",
        }
    }
}

/// How supervised Swin weights behave differently in VIS-MAE's networks, said wherever they are
/// imported.
pub const NOTES: [&str; 4] = [
    "LayerNorm eps: Swin uses 1e-5, VIS-MAE 1e-6; the weights' card records 1e-5 and fine-tuning builds its network with it",
    "input: Swin was trained on ImageNet mean/std-normalised RGB; the card asks fine-tuning to feed ImageNet statistics (grey images replicated to 3 channels)",
    "the 7x7 stage: Swin runs it unshifted in one 7x7 window; VIS-MAE shifts every odd block with a 4-region mask, so features there differ from the original network's",
    "padding: VIS-MAE pads before the cyclic shift inside attention (Swin needs no padding at 224 px)",
];

/// The layout of a state dict.
pub fn detect_layout(sd: &StateDict) -> SwinLayout {
    let keys = &sd.tensors;
    // timm's markers first: the 2023 hub files carry attn_mask buffers too
    if keys.contains_key("head.fc.weight") || keys.contains_key("layers.3.downsample.reduction.weight") {
        SwinLayout::Timm
    } else if keys.keys().any(|k| k.ends_with(".attn_mask")) {
        SwinLayout::Microsoft
    } else {
        SwinLayout::Vismae
    }
}

/// The card of imported supervised weights.
pub fn imported_card(layout: SwinLayout, source: &str, name: &str) -> ModelCard {
    ModelCard {
        vismae: vismae_run::VISMAE_VERSION.into(),
        kind: ModelKind::Classifier,
        variant: None,
        name: name.into(),
        preprocess: Preprocess {
            size: 224,
            in_chans: 3,
            channels: Channels::Grey,
            intensity: Intensity::default(),
            norm: InputNorm::imagenet(),
        },
        origin: Origin::Imported { layout: layout.name().into(), source: source.into() },
        classes: Vec::new(),
        layer_norm_eps: Some(1e-5),
        finetune_norm: Some(InputNorm::imagenet()),
        metrics: Default::default(),
        data: None,
        licence: Some(format!("that of the file it was converted from ({source})")),
    }
}

/// The state dict in the VIS-MAE layout, and the layout it came in. Microsoft and timm files get a
/// card (named `ImageNet`, as the paper's baseline) unless they already carry one.
pub fn to_vismae(sd: StateDict) -> (StateDict, SwinLayout) {
    let layout = detect_layout(&sd);
    if layout == SwinLayout::Vismae {
        return (sd, layout);
    }
    let mut out = StateDict { metadata: sd.metadata.clone(), ..Default::default() };
    for (k, v) in sd.tensors {
        if k.ends_with(".attn_mask") || k.ends_with(".relative_position_index") {
            continue;
        }
        let k = match layout {
            SwinLayout::Timm => timm_key(&k),
            _ => k,
        };
        out.tensors.insert(k, TensorEntry { shape: v.shape, values: v.values });
    }
    if out.card().is_none() {
        out.set_card(&imported_card(layout, "", "ImageNet"));
    }
    (out, layout)
}

/// A timm key in the VIS-MAE layout.
fn timm_key(k: &str) -> String {
    if let Some(rest) = k.strip_prefix("head.fc.") {
        return format!("head.{rest}");
    }
    if let Some(rest) = k.strip_prefix("layers.")
        && let Some((stage, tail)) = rest.split_once('.')
        && tail.starts_with("downsample.")
        && let Ok(s) = stage.parse::<usize>()
        && s > 0
    {
        return format!("layers.{}.{tail}", s - 1);
    }
    k.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Values;

    #[test]
    fn timm_keys_move_to_the_vismae_stage() {
        assert_eq!(timm_key("layers.1.downsample.reduction.weight"), "layers.0.downsample.reduction.weight");
        assert_eq!(timm_key("layers.3.downsample.norm.bias"), "layers.2.downsample.norm.bias");
        assert_eq!(timm_key("layers.2.blocks.4.attn.qkv.weight"), "layers.2.blocks.4.attn.qkv.weight");
        assert_eq!(timm_key("head.fc.weight"), "head.weight");
        let mut sd = StateDict::default();
        sd.tensors
            .insert("head.fc.weight".into(), TensorEntry { shape: vec![2, 2], values: Values::F32(vec![0.0; 4]) });
        let (out, layout) = to_vismae(sd);
        assert_eq!(layout, SwinLayout::Timm);
        assert!(out.tensors.contains_key("head.weight"));
        assert_eq!(out.card().map(|c| c.name), Some("ImageNet".into()));
    }
}
