//! Model files of any kind: load a network from safetensors, an official `.pth` or a burn record
//! (with its JSON sidecar), save it in any of those, and describe it. The kind and configuration
//! of a state dict are recovered from its keys and shapes; a burn record carries them in
//! `NAME.json` beside `NAME.mpk`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::weights::{
    Format, LoadOptions, LoadReport, ModelKind, StateDict, WeightError, apply_state_dict, detect, export_state_dict,
    pth_write, read_state_dict, safetensors_io,
};
use crate::{
    ClassifierConfig, MaeConfig, SimClr, SimClrConfig, SwinClassifier, SwinConfig, SwinMae, SwinUnet, UnetConfig,
};

/// Everything needed to build a network before its weights are loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Which network.
    pub kind: ModelKind,
    /// Backbone configuration.
    pub swin: SwinConfig,
    /// Classes (Swin-UNet, classifier).
    pub num_classes: Option<usize>,
    /// Mask ratio (MAE).
    pub mask_ratio: f64,
    /// Mask unit side in tokens (MAE).
    pub mask_unit: usize,
    /// Normalised-pixel loss target (MAE).
    pub norm_pix_loss: bool,
    /// The projection head `(layers, hidden width, output width)` (SimCLR encoders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<(usize, usize, usize)>,
    /// What the file says about itself (preprocessing, origin, name), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<vismae_run::ModelCard>,
}

impl ModelSpec {
    /// Spec of an MAE.
    pub fn mae(c: &MaeConfig) -> Self {
        Self {
            kind: ModelKind::Mae,
            swin: c.swin.clone(),
            num_classes: None,
            mask_ratio: c.mask_ratio,
            mask_unit: c.mask_unit,
            norm_pix_loss: c.norm_pix_loss,
            projection: None,
            card: None,
        }
    }

    /// Spec of a SimCLR network.
    pub fn simclr(c: &SimClrConfig) -> Self {
        Self {
            kind: ModelKind::Encoder,
            projection: Some((c.projection_layers, c.projection_hidden, c.projection_dim)),
            ..Self::mae(&mae_defaults(&c.swin))
        }
    }

    /// The SimCLR configuration this spec describes.
    pub fn simclr_config(&self) -> SimClrConfig {
        let d = self.swin.bottleneck_dim();
        let (layers, hidden, dim) = self.projection.unwrap_or((2, d, 128));
        SimClrConfig {
            swin: self.swin.clone(),
            projection_layers: layers,
            projection_hidden: hidden,
            projection_dim: dim,
        }
    }

    /// The same spec carrying `card`.
    pub fn with_card(self, card: vismae_run::ModelCard) -> Self {
        Self { card: Some(card), ..self }
    }

    /// Spec of a Swin-UNet.
    pub fn unet(c: &UnetConfig) -> Self {
        Self { kind: ModelKind::Unet, num_classes: Some(c.num_classes), ..Self::mae(&mae_defaults(&c.swin)) }
    }

    /// Spec of a classifier.
    pub fn classifier(c: &ClassifierConfig) -> Self {
        Self { kind: ModelKind::Classifier, num_classes: Some(c.num_classes), ..Self::mae(&mae_defaults(&c.swin)) }
    }

    /// The MAE configuration this spec describes.
    pub fn mae_config(&self) -> MaeConfig {
        MaeConfig {
            swin: self.swin.clone(),
            mask_ratio: self.mask_ratio,
            mask_unit: self.mask_unit,
            norm_pix_loss: self.norm_pix_loss,
        }
    }

    /// Builds a freshly initialised network of this spec.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AnyModel<B> {
        let classes = self.num_classes.unwrap_or(2);
        match self.kind {
            ModelKind::Mae => AnyModel::Mae(self.mae_config().init(device)),
            ModelKind::Unet => {
                AnyModel::Unet(UnetConfig { swin: self.swin.clone(), num_classes: classes }.init(device))
            }
            ModelKind::Classifier => {
                AnyModel::Classifier(ClassifierConfig { swin: self.swin.clone(), num_classes: classes }.init(device))
            }
            ModelKind::Encoder => AnyModel::SimClr(self.simclr_config().init(device)),
        }
    }
}

/// The projection head of a SimCLR state dict: `(layers, hidden, output)` from its shapes.
fn projection_of(sd: &StateDict) -> Option<(usize, usize, usize)> {
    let layers = (0..).take_while(|k| sd.tensors.contains_key(&format!("projection.{k}.weight"))).count();
    if layers == 0 {
        return None;
    }
    let hidden = sd.tensors.get("projection.0.weight")?.shape[0];
    let out = sd.tensors.get(&format!("projection.{}.weight", layers - 1))?.shape[0];
    Some((layers, hidden, out))
}

fn mae_defaults(swin: &SwinConfig) -> MaeConfig {
    MaeConfig { swin: swin.clone(), mask_ratio: 0.75, mask_unit: 4, norm_pix_loss: false }
}

/// One of the three networks (each variant is a handle to tensors, so size differences are moot).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyModel<B: Backend> {
    /// Pre-training MAE.
    Mae(SwinMae<B>),
    /// Segmentation network.
    Unet(SwinUnet<B>),
    /// Classifier.
    Classifier(SwinClassifier<B>),
    /// SimCLR encoder and projection head.
    SimClr(SimClr<B>),
}

impl<B: Backend> AnyModel<B> {
    /// Trainable parameter count.
    pub fn num_params(&self) -> usize {
        match self {
            AnyModel::Mae(m) => m.num_params(),
            AnyModel::Unet(m) => m.num_params(),
            AnyModel::Classifier(m) => m.num_params(),
            AnyModel::SimClr(m) => m.num_params(),
        }
    }

    /// The official-layout state dict.
    pub fn state_dict(self) -> (Self, StateDict) {
        match self {
            AnyModel::Mae(m) => {
                let (m, sd) = export_state_dict::<B, _>(m);
                (AnyModel::Mae(m), sd)
            }
            AnyModel::Unet(m) => {
                let (m, sd) = export_state_dict::<B, _>(m);
                (AnyModel::Unet(m), sd)
            }
            AnyModel::Classifier(m) => {
                let (m, sd) = export_state_dict::<B, _>(m);
                (AnyModel::Classifier(m), sd)
            }
            AnyModel::SimClr(m) => {
                let (m, sd) = export_state_dict::<B, _>(m);
                (AnyModel::SimClr(m), sd)
            }
        }
    }

    /// Applies a state dict (see [`apply_state_dict`]).
    pub fn apply(self, sd: &StateDict, opts: LoadOptions) -> Result<(Self, LoadReport), WeightError> {
        Ok(match self {
            AnyModel::Mae(m) => {
                let (m, r) = apply_state_dict(m, sd, opts)?;
                (AnyModel::Mae(m), r)
            }
            AnyModel::Unet(m) => {
                let (m, r) = apply_state_dict(m, sd, opts)?;
                (AnyModel::Unet(m), r)
            }
            AnyModel::Classifier(m) => {
                let (m, r) = apply_state_dict(m, sd, opts)?;
                (AnyModel::Classifier(m), r)
            }
            AnyModel::SimClr(m) => {
                let (m, r) = apply_state_dict(m, sd, opts)?;
                (AnyModel::SimClr(m), r)
            }
        })
    }
}

/// Where the spec of a burn record lives: `NAME.json` beside `NAME.mpk`.
pub fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("json")
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// The file format implied by an output path's extension.
pub fn format_for_output(path: &Path) -> Result<Format, WeightError> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("safetensors") => Ok(Format::Safetensors),
        Some("pth") | Some("pt") => Ok(Format::Pth),
        Some("mpk") => Ok(Format::BurnRecord),
        _ => Err(WeightError::Format {
            path: path.into(),
            reason: "unknown output format: use .safetensors, .pth (or .pt) or .mpk (burn record)".into(),
        }),
    }
}

/// Loads a network from any supported file. State dicts must match the recovered configuration
/// exactly (the report lists every key); burn records need their JSON sidecar.
pub fn load<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(AnyModel<B>, ModelSpec, Option<LoadReport>), WeightError> {
    let fail = |reason: String| WeightError::Format { path: path.into(), reason };
    match Format::sniff(path)? {
        Format::BurnRecord => {
            let side = sidecar(path);
            let text = std::fs::read_to_string(&side)
                .map_err(|e| fail(format!("cannot read the record's spec {}: {e}", side.display())))?;
            let spec: ModelSpec =
                serde_json::from_str(&text).map_err(|e| fail(format!("{}: invalid spec: {e}", side.display())))?;
            let rec = recorder();
            let model = match spec.init::<B>(device) {
                AnyModel::Mae(m) => AnyModel::Mae(m.load_file(path, &rec, device).map_err(|e| fail(e.to_string()))?),
                AnyModel::Unet(m) => AnyModel::Unet(m.load_file(path, &rec, device).map_err(|e| fail(e.to_string()))?),
                AnyModel::Classifier(m) => {
                    AnyModel::Classifier(m.load_file(path, &rec, device).map_err(|e| fail(e.to_string()))?)
                }
                AnyModel::SimClr(m) => {
                    AnyModel::SimClr(m.load_file(path, &rec, device).map_err(|e| fail(e.to_string()))?)
                }
            };
            Ok((model, spec, None))
        }
        Format::Safetensors | Format::Pth => {
            let sd = crate::weights::swin_import::to_vismae(read_state_dict(path)?).0;
            let info = detect(&sd).map_err(|e| fail(e.to_string()))?;
            let spec = ModelSpec {
                kind: info.kind,
                swin: info.swin,
                num_classes: info.num_classes,
                mask_ratio: 0.75,
                mask_unit: 4,
                norm_pix_loss: false,
                projection: projection_of(&sd),
                card: sd.card(),
            };
            let (model, report) = spec.init::<B>(device).apply(&sd, LoadOptions::default())?;
            Ok((model, spec, Some(report)))
        }
    }
}

/// Saves a network in the format its path's extension names. A burn record also gets its sidecar.
pub fn save<B: Backend>(model: AnyModel<B>, spec: &ModelSpec, path: &Path) -> Result<AnyModel<B>, WeightError> {
    let fail = |reason: String| WeightError::Format { path: path.into(), reason };
    match format_for_output(path)? {
        Format::Safetensors => {
            let (model, mut sd) = model.state_dict();
            if let Some(card) = &spec.card {
                sd.set_card(card);
            }
            safetensors_io::write(&sd, path)?;
            Ok(model)
        }
        Format::Pth => {
            let (model, mut sd) = model.state_dict();
            if let Some(card) = &spec.card {
                sd.set_card(card);
            }
            pth_write::write(&sd, path)?;
            Ok(model)
        }
        Format::BurnRecord => {
            let json = serde_json::to_string_pretty(spec).map_err(|e| fail(e.to_string()))?;
            crate::weights::write_atomic(&sidecar(path), json.as_bytes())?;
            // the bytes the file recorder writes (named MessagePack), written whole and synced
            let rec = burn::record::NamedMpkBytesRecorder::<burn::record::FullPrecisionSettings>::default();
            let bytes = match &model {
                AnyModel::Mae(m) => burn::record::Recorder::<B>::record(&rec, m.clone().into_record(), ()),
                AnyModel::Unet(m) => burn::record::Recorder::<B>::record(&rec, m.clone().into_record(), ()),
                AnyModel::Classifier(m) => burn::record::Recorder::<B>::record(&rec, m.clone().into_record(), ()),
                AnyModel::SimClr(m) => burn::record::Recorder::<B>::record(&rec, m.clone().into_record(), ()),
            }
            .map_err(|e| fail(e.to_string()))?;
            crate::weights::write_atomic(path, &bytes)?;
            if let Some(card) = &spec.card {
                let mut sd = StateDict::default();
                sd.set_card(card);
                crate::weights::write_card_beside(&sd, path)?;
            }
            Ok(model)
        }
    }
}
