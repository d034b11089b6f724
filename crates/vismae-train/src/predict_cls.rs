//! `vismae predict` for classification runs: each image is prepared as in training (its middle
//! frame or slice, [0, 1], grey, resized), classified, and written to `predictions.csv` in the
//! `vismae evaluate cls` format: `id,label,prob_0,...` (softmax), or `id,labels,prob_0,...`
//! (sigmoid, `|`-separated indices) for multi-label runs. The label column is filled when the
//! images come from a labelled set and left empty otherwise.

use std::path::Path;

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use vismae_data::labelled::Target;
use vismae_model::{SwinClassifier, Variant};

use crate::finetune::{FinetuneConfig, load_best};
use crate::finetune_cls::{ClsSettings, input, load_image};
use crate::parallel::forward_split;

/// A fine-tuned classifier with the settings it was trained with.
pub struct ClsModel<B: Backend> {
    model: SwinClassifier<B>,
    settings: ClsSettings,
    /// Class names (from the labelled set), or indices.
    pub classes: Vec<String>,
    /// Multi-label (sigmoid) rather than multi-class (softmax).
    pub multi_label: bool,
}

/// Loads `RUN/config.json`, `RUN/summary.json` and `RUN/best.safetensors` of a `finetune cls` run.
pub fn load_run<B: Backend>(run: &Path, device: &B::Device) -> Result<ClsModel<B>, String> {
    let cfg = FinetuneConfig::read(run, Some("classification"))?;
    let settings: ClsSettings = serde_json::from_value(cfg.settings).map_err(|e| format!("{}: {e}", run.display()))?;
    let multi_label = std::fs::read_to_string(run.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["multi_label"].as_bool())
        .unwrap_or(false);
    let variant =
        Variant::from_name(&settings.variant).ok_or_else(|| format!("unknown variant {:?}", settings.variant))?;
    let (model, n) = load_best(run, |n| variant.classifier(settings.in_chans, n).init::<B>(device))?;
    let classes = if cfg.classes.len() == n { cfg.classes } else { (0..n).map(|k| k.to_string()).collect() };
    Ok(ClsModel { model, settings, classes, multi_label })
}

impl<B: Backend> ClsModel<B> {
    /// Class probabilities of each image file.
    pub fn predict(&self, files: &[&Path], device: &B::Device) -> Result<Vec<Vec<f64>>, String> {
        let s = &self.settings;
        let c = self.classes.len();
        let mut out = Vec::with_capacity(files.len());
        for chunk in files.chunks(s.batch_size.max(1)) {
            let mut data = Vec::with_capacity(chunk.len() * s.size * s.size);
            for f in chunk {
                data.extend(load_image(f, s.size)?);
            }
            let logits = forward_split(input::<B>(data, chunk.len(), s, device), |x| self.model.forward(x));
            let p = if self.multi_label { sigmoid(logits) } else { softmax(logits, 1) };
            let p: Vec<f64> = p.into_data().convert::<f64>().to_vec().unwrap_or_default();
            out.extend(p.chunks(c).map(<[f64]>::to_vec));
        }
        Ok(out)
    }
}

/// Writes `predictions.csv`: one row per `(id, target if known, probabilities)`.
pub fn write_csv(path: &Path, multi_label: bool, rows: &[(String, Option<Target>, Vec<f64>)]) -> Result<(), String> {
    if path.exists() {
        return Err(format!("{} already exists (vismae never overwrites)", path.display()));
    }
    let classes = rows.first().map(|r| r.2.len()).unwrap_or(0);
    let mut text = String::from(if multi_label { "id,labels" } else { "id,label" });
    for k in 0..classes {
        text.push_str(&format!(",prob_{k}"));
    }
    text.push('\n');
    for (id, target, probs) in rows {
        let label = match target {
            Some(Target::Class(c)) => c.to_string(),
            Some(Target::Labels(on)) => on.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("|"),
            _ => String::new(),
        };
        let id = if id.contains([',', '"']) { format!("\"{}\"", id.replace('"', "\"\"")) } else { id.clone() };
        text.push_str(&format!("{id},{label}"));
        for p in probs {
            text.push_str(&format!(",{p}"));
        }
        text.push('\n');
    }
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
