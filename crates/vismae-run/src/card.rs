//! The model card every weight file vismae writes carries (in the safetensors metadata under
//! [`ModelCard::METADATA_KEY`], and in a burn record's JSON sidecar): what the network is, what it
//! sees ([`Preprocess`]), where its weights came from, and the name reports and studies give it
//! (`VIS-MAE-Generic`, `VIS-MAE-MR`, `scratch`, ...). Files without a card (the official code's,
//! other tools') still load; then the preprocessing is the reference's and the name the file's.
//! Every weight file vismae writes also gets the card beside it, as `STEM.card.json` and a
//! readable `STEM.card.md` ([`ModelCard::write_beside`]), the way timm and MONAI bundles describe
//! theirs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// What the weights were trained on, when vismae trained them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSummary>,
    /// The terms the weights come with (as given to the run; otherwise those of their data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
}

/// The training data of a network, in brief.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// Images (pre-training) or training cases (fine-tuning).
    pub images: usize,
    /// Images by modality, where known.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modalities: BTreeMap<String, usize>,
    /// Where they came from: the folders or files ingested, or the labelled set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// What a card says when no licence was given for the weights.
pub const LICENCE_UNSTATED: &str =
    "not stated: the weights carry the terms of the images they were trained on (see the sources)";

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

    /// The card files beside the weight file `weights`: `STEM.card.json` and `STEM.card.md`.
    pub fn paths_beside(weights: &Path) -> (PathBuf, PathBuf) {
        let stem = weights.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "weights".into());
        (weights.with_file_name(format!("{stem}.card.json")), weights.with_file_name(format!("{stem}.card.md")))
    }

    /// Writes the card beside the weight file `weights` (JSON and Markdown), each atomically.
    pub fn write_beside(&self, weights: &Path) -> Result<(), crate::RunError> {
        let (json, md) = Self::paths_beside(weights);
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        crate::run_dir::write_atomic(&json, text.as_bytes())?;
        crate::run_dir::write_atomic(&md, self.to_markdown(weights).as_bytes())
    }

    /// The card written beside `weights`, if there is one that parses.
    pub fn read_beside(weights: &Path) -> Option<(PathBuf, ModelCard)> {
        let (json, _) = Self::paths_beside(weights);
        let text = std::fs::read_to_string(&json).ok()?;
        serde_json::from_str(&text).ok().map(|c| (json, c))
    }

    /// The card as a Markdown page for people (a model card in the Hugging Face / MONAI sense).
    pub fn to_markdown(&self, weights: &Path) -> String {
        let file = weights.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut rows: Vec<(String, String)> = Vec::new();
        rows.push(("file".into(), format!("`{file}`")));
        let variant = self.variant.map(|v| format!(", variant `{}`", v.name())).unwrap_or_default();
        rows.push(("network".into(), format!("{}{variant}", self.kind)));
        if let Some(eps) = self.layer_norm_eps {
            rows.push(("LayerNorm epsilon".into(), format!("{eps}")));
        }
        rows.push(("input".into(), self.preprocess.describe()));
        if let Some(n) = &self.finetune_norm {
            rows.push(("fine-tuning input".into(), n.describe()));
        }
        let method = match &self.origin {
            Origin::Pretrained { method, steps, data, .. } => {
                format!("self-supervised pre-training ({method}) by `vismae pretrain`, {steps} steps, dataset `{data}`")
            }
            Origin::Finetuned { task, from, .. } => format!("fine-tuned for {task} by `vismae finetune`, from {from}"),
            Origin::Imported { layout, source } => format!("imported from `{source}` ({layout} layout)"),
        };
        rows.push(("method".into(), method));
        if !self.classes.is_empty() {
            rows.push(("classes".into(), self.classes.join(", ")));
        }
        if let Some(d) = &self.data {
            let by: Vec<String> = d.modalities.iter().map(|(m, n)| format!("{n} {m}")).collect();
            let by = if by.is_empty() { String::new() } else { format!(" ({})", by.join(", ")) };
            let what = if matches!(self.origin, Origin::Finetuned { .. }) { "training cases" } else { "images" };
            rows.push(("training data".into(), format!("{} {what}{by}", d.images)));
            if !d.sources.is_empty() {
                let s: Vec<String> = d.sources.iter().map(|s| format!("`{s}`")).collect();
                rows.push(("sources".into(), s.join(", ")));
            }
        }
        if !self.metrics.is_empty() {
            let m: Vec<String> = self.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            rows.push(("metrics".into(), m.join(", ")));
        }
        rows.push(("licence".into(), self.licence.clone().unwrap_or_else(|| LICENCE_UNSTATED.into())));
        rows.push(("written by".into(), format!("vismae {}", self.vismae)));
        let mut out = format!("# {}\n\n| | |\n|---|---|\n", self.name);
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        }
        out.push_str(&format!(
            "\nThe same card is in `{}.card.json` and, for safetensors, in the file's metadata (`{}`); `vismae weights inspect {file}` prints it.\n",
            weights.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            Self::METADATA_KEY
        ));
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> ModelCard {
        ModelCard {
            vismae: "0.2.0".into(),
            kind: ModelKind::Mae,
            variant: Some(Variant::Tiny),
            name: "VIS-MAE-Generic".into(),
            preprocess: Preprocess::default(),
            origin: Origin::Pretrained {
                method: Method::Mae,
                modalities: Vec::new(),
                images: 12,
                steps: 30,
                data: "/d/set".into(),
            },
            classes: Vec::new(),
            layer_norm_eps: None,
            finetune_norm: None,
            metrics: BTreeMap::from([("loss".to_string(), 0.25)]),
            data: Some(DataSummary {
                images: 12,
                modalities: BTreeMap::from([("CT".to_string(), 8), ("MR".to_string(), 4)]),
                sources: vec!["/data/a|b".into()],
            }),
            licence: None,
        }
    }

    #[test]
    fn card_files_beside_the_weights_round_trip() {
        let dir = std::env::temp_dir().join(format!("vismae-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let w = dir.join("best.safetensors");
        let c = card();
        c.write_beside(&w).unwrap_or_else(|e| panic!("{e}"));
        let (json, md) = ModelCard::paths_beside(&w);
        assert_eq!(json, dir.join("best.card.json"));
        assert_eq!(ModelCard::read_beside(&w).map(|(_, c)| c), Some(c));
        let text = std::fs::read_to_string(md).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.starts_with("# VIS-MAE-Generic\n"), "{text}");
        assert!(text.contains("| training data | 12 images (8 CT, 4 MR) |"), "{text}");
        assert!(text.contains("`/data/a\\|b`"), "a | in a cell is escaped: {text}");
        assert!(text.contains(LICENCE_UNSTATED), "{text}");
        assert!(text.contains("loss 0.2500"), "{text}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn cards_without_the_new_fields_still_parse() {
        let mut v = serde_json::to_value(card()).unwrap_or_else(|e| panic!("{e}"));
        if let Some(o) = v.as_object_mut() {
            o.remove("data");
            o.remove("licence");
        }
        let c: ModelCard = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.data, c.licence), (None, None));
    }
}
