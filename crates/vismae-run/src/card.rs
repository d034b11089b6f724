//! The model card every weight file vismae writes carries (in the safetensors metadata under
//! [`ModelCard::METADATA_KEY`], and in a burn record's JSON sidecar): what the network is, what it
//! sees ([`Preprocess`]), where its weights came from, and the name reports and studies give it
//! (`VIS-MAE-Generic`, `VIS-MAE-MR`, `scratch`, ...). Files without a card (the official code's,
//! other tools') still load; then the preprocessing is the reference's and the name the file's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::preprocess::Preprocess;
use crate::vocab::{Method, ModelKind, Task, Variant};

/// Where a network's weights came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// Self-supervised pre-training by `vismae pretrain`.
    Pretrained {
        /// How it learned.
        method: Method,
        /// Modalities it was trained on (empty: all of the dataset's).
        modalities: Vec<String>,
        /// Images in its training set.
        images: usize,
        /// Optimizer steps.
        steps: usize,
        /// The dataset folder.
        data: String,
    },
    /// Fine-tuned by `vismae finetune`.
    Finetuned {
        /// For what.
        task: Task,
        /// The name of the initialisation it started from.
        from: String,
        /// What its encoder was pre-trained on, when it started from pre-trained weights.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoder_preprocess: Option<Preprocess>,
    },
    /// Converted from another tool's file by `vismae weights convert`.
    Imported {
        /// The layout it was read in (e.g. `official`, `microsoft-swin`, `timm-swin`).
        layout: String,
        /// The file it came from.
        source: String,
    },
}

/// What a weight file says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The version of vismae that wrote it.
    pub vismae: String,
    /// Which network.
    pub kind: ModelKind,
    /// The named variant, when the architecture is one.
    #[serde(default)]
    pub variant: Option<Variant>,
    /// The name reports and studies use for these weights.
    pub name: String,
    /// What the network sees.
    pub preprocess: Preprocess,
    /// Where the weights came from.
    pub origin: Origin,
    /// Class names (fine-tuned networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// LayerNorm epsilon of the architecture when it is not VIS-MAE's 1e-6 (Microsoft's and timm's
    /// Swin use 1e-5): fine-tuning builds its network with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_norm_eps: Option<f64>,
    /// The input normalisation fine-tuning should feed these weights, when they need their own
    /// (supervised ImageNet weights: ImageNet statistics); unset, the task's reference input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune_norm: Option<crate::InputNorm>,
    /// Headline metrics where known (e.g. `best_val_dice`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

impl ModelCard {
    /// The safetensors metadata key holding the card as JSON.
    pub const METADATA_KEY: &'static str = "vismae.card";

    /// The card as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The card of a metadata map, if it has one that parses.
    pub fn from_metadata(meta: &BTreeMap<String, String>) -> Option<ModelCard> {
        meta.get(Self::METADATA_KEY).and_then(|t| serde_json::from_str(t).ok())
    }

    /// A name for pre-trained weights, as the paper names them: `VIS-MAE-Generic` (all
    /// modalities) or `VIS-MAE-<modality>`; other methods by their own name.
    pub fn pretrained_name(method: Method, modalities: &[String]) -> String {
        match (method, modalities.is_empty()) {
            (Method::Mae, true) => "VIS-MAE-Generic".into(),
            (Method::Mae, false) => format!("VIS-MAE-{}", modalities.join("+")),
            (Method::Simclr, true) => "SimCLR".into(),
            (Method::Simclr, false) => format!("SimCLR-{}", modalities.join("+")),
        }
    }
}
