//! Recognises which VIS-MAE network a state dict belongs to and recovers its configuration from
//! key names and shapes (used by `vismae weights inspect` and by loaders that take any file).

use super::StateDict;
use crate::ModelError;
use crate::config::{SwinConfig, Variant, VariantExt};

pub use vismae_run::ModelKind;

/// What a state dict says about its network.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// Which network.
    pub kind: ModelKind,
    /// Backbone configuration recovered from shapes.
    pub swin: SwinConfig,
    /// Output classes (Swin-UNet and classifier).
    pub num_classes: Option<usize>,
    /// The named variant whose width and depths match, if any.
    pub variant: Option<Variant>,
    /// Trainable parameters (every float tensor except the frozen `pos_embed`).
    pub trainable_params: usize,
}

fn shape<'a>(sd: &'a StateDict, key: &str) -> Result<&'a [usize], ModelError> {
    sd.tensors
        .get(key)
        .map(|t| t.shape.as_slice())
        .ok_or_else(|| ModelError::Unrecognised(format!("key {key} is missing")))
}

/// Recognises the network and its configuration.
pub fn detect(sd: &StateDict) -> Result<ModelInfo, ModelError> {
    let has = |k: &str| sd.tensors.contains_key(k);
    let kind = if has("decoder_pred.weight") {
        ModelKind::Mae
    } else if has("projection.0.weight") {
        ModelKind::Encoder
    } else if has("skip_connection_layers.0.weight") {
        ModelKind::Unet
    } else if has("head.weight") && has("norm.weight") {
        ModelKind::Classifier
    } else {
        return Err(ModelError::Unrecognised("not a VIS-MAE state dict: none of decoder_pred.weight, skip_connection_layers.0.weight or head.weight+norm.weight is present".into()));
    };
    let pe = shape(sd, "patch_embed.proj.weight")?;
    let [embed_dim, in_chans, patch_size, _] = pe else {
        return Err(ModelError::Unrecognised(format!(
            "patch_embed.proj.weight has shape {pe:?}, expected 4 dimensions"
        )));
    };
    let mut depths = Vec::new();
    let mut num_heads = Vec::new();
    let mut window_size = 7;
    while has(&format!("layers.{}.blocks.0.norm1.weight", depths.len())) {
        let s = depths.len();
        let depth = (0..).take_while(|b| has(&format!("layers.{s}.blocks.{b}.norm1.weight"))).count();
        let table = shape(sd, &format!("layers.{s}.blocks.0.attn.relative_position_bias_table"))?;
        let span = (table[0] as f64).sqrt().round() as usize;
        window_size = span.div_ceil(2);
        num_heads.push(table.get(1).copied().unwrap_or(1));
        depths.push(depth);
    }
    if depths.is_empty() {
        return Err(ModelError::Unrecognised("no encoder stages (layers.0.blocks.0.*) found".into()));
    }
    let mlp_hidden = shape(sd, "layers.0.blocks.0.mlp.fc1.weight")?[0];
    let swin = SwinConfig {
        in_chans: *in_chans,
        patch_size: *patch_size,
        embed_dim: *embed_dim,
        depths: depths.clone(),
        num_heads,
        window_size,
        mlp_ratio: mlp_hidden / embed_dim.max(&1),
        qkv_bias: has("layers.0.blocks.0.attn.qkv.bias"),
        layer_norm_eps: sd.card().and_then(|c| c.layer_norm_eps).unwrap_or(1e-6),
        drop_path_rate: 0.1,
    };
    let num_classes = match kind {
        ModelKind::Mae | ModelKind::Encoder => None,
        ModelKind::Unet | ModelKind::Classifier => Some(shape(sd, "head.weight")?[0]),
    };
    let variant = Variant::ALL.into_iter().find(|v| {
        let c = v.mae(*in_chans).swin;
        c.embed_dim == *embed_dim && (depths == v.mae_depths() || depths == v.seg_depths())
    });
    let trainable_params = sd
        .tensors
        .iter()
        .filter(|(k, t)| k.as_str() != "pos_embed" && matches!(t.values, super::Values::F32(_)))
        .map(|(_, t)| t.values.len())
        .sum();
    Ok(ModelInfo { kind, swin, num_classes, variant, trainable_params })
}
