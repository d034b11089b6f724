//! The files of a run folder as types, read and written by the same code:
//! - `config.json`: [`PretrainConfig`] or [`FinetuneConfig`], the resolved run (settings as given
//!   plus everything derived from them), written before the first step and read back by
//!   `--resume`, `predict`, `reconstruct`, `report` and `study`;
//! - `summary.json`: [`SegSummary`] or [`ClsSummary`], written when a fine-tuning run ends;
//! - `RUN/test/summary.json` and any `vismae evaluate --out DIR`: [`SegEvaluation`] or
//!   [`ClsEvaluation`].
//!
//! Every `config.json` records the schema and the vismae version that wrote it. Folders written by
//! vismae 0.1 (schema 1, no number) still read: what they lack is derived as 0.1 derived it. A
//! folder from a newer schema is refused with a message naming the version that wrote it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RunError;
use crate::preprocess::{Channels, InputNorm, Intensity, Preprocess};
use crate::run_dir::{RunDir, read_json};
use crate::settings::{ClsSettings, PretrainSettings, SegSettings};
use crate::vocab::{Init, Method, Task};
use crate::{SCHEMA, VISMAE_VERSION};

fn schema_one() -> u32 {
    1
}

fn version_zero_one() -> String {
    "0.1".into()
}

/// The schema of a `config.json` value: refuses newer ones.
fn check_schema(path: &Path, v: &Value) -> Result<u32, RunError> {
    let found = v.get("schema").and_then(Value::as_u64).unwrap_or(1) as u32;
    if found > SCHEMA {
        let writer = v.get("vismae").and_then(Value::as_str).unwrap_or("unknown").to_string();
        return Err(RunError::Newer { path: path.into(), writer, found, supported: SCHEMA, ours: VISMAE_VERSION });
    }
    Ok(found)
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::Corrupt { path: path.into(), reason: format!("not a vismae run config: {e}") }
}

/// `config.json` of a pre-training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Run-folder schema.
    #[serde(default = "schema_one")]
    pub schema: u32,
    /// The vismae that wrote it.
    #[serde(default = "version_zero_one")]
    pub vismae: String,
    /// The settings as given.
    pub settings: PretrainSettings,
    /// The dataset folder.
    pub data: PathBuf,
    /// Images selected from it.
    pub images: usize,
    /// Image side.
    pub size: usize,
    /// `batch_size * accum_steps`.
    pub effective_batch: usize,
    /// Optimizer steps per epoch (incomplete micro-batches dropped).
    pub steps_per_epoch: usize,
    /// Optimizer steps in the run.
    pub total_steps: usize,
    /// Warm-up in optimizer steps.
    pub warmup_steps: usize,
    /// Data-parallel replicas.
    #[serde(default)]
    pub devices: usize,
    /// What the network sees.
    #[serde(default)]
    pub preprocess: Preprocess,
    /// The selected images by modality and where the dataset's images came from (for the card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_summary: Option<crate::DataSummary>,
}

impl PretrainConfig {
    /// Reads `RUN/config.json` of a pre-training run.
    pub fn read(run: &Path) -> Result<Self, RunError> {
        let path = run.join("config.json");
        let v: Value = read_json(&path)?;
        let schema = check_schema(&path, &v)?;
        if v.get("total_steps").is_none() {
            return Err(corrupt(&path, "it has no total_steps (is this a fine-tuning run?)"));
        }
        let mut cfg: Self = serde_json::from_value(v).map_err(|e| corrupt(&path, e))?;
        if schema == 1 {
            // what vismae 0.1 fed the network
            cfg.devices = cfg.settings.devices.max(1);
            cfg.preprocess = Preprocess {
                size: cfg.size,
                in_chans: cfg.settings.in_chans,
                channels: Channels::Grey,
                intensity: Intensity::default(),
                norm: cfg.settings.norm.clone(),
            };
        }
        Ok(cfg)
    }

    /// Writes `RUN/config.json`.
    pub fn write(&self, run: &RunDir) -> Result<(), RunError> {
        run.write_json("config.json", self)
    }

    /// How the method is named in reports (`VIS-MAE-Generic`, `VIS-MAE-MR`).
    pub fn name(&self) -> String {
        crate::card::ModelCard::pretrained_name(self.settings.method, &self.settings.modalities)
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.settings.method
    }
}

impl Default for Preprocess {
    /// The pre-training reference: 224 px, 3 channels of replicated grey, `[0, 1]` by the format's
    /// rules, then `(x - 0.223) / 0.202`.
    fn default() -> Self {
        Preprocess {
            size: 224,
            in_chans: 3,
            channels: Channels::Grey,
            intensity: Intensity::default(),
            norm: InputNorm::REFERENCE_MEAN_STD,
        }
    }
}

/// The settings of a fine-tuning run, by task.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TaskSettings {
    /// `finetune seg`.
    Segmentation(SegSettings),
    /// `finetune cls`.
    Classification(ClsSettings),
}

impl TaskSettings {
    /// The task.
    pub fn task(&self) -> Task {
        match self {
            TaskSettings::Segmentation(_) => Task::Segmentation,
            TaskSettings::Classification(_) => Task::Classification,
        }
    }
}

/// `config.json` of a fine-tuning run: enough to resume it, predict with it and report it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FinetuneConfigRepr")]
pub struct FinetuneConfig {
    /// Run-folder schema.
    pub schema: u32,
    /// The vismae that wrote it.
    pub vismae: String,
    /// What the network does.
    pub task: Task,
    /// The labelled set.
    pub data: PathBuf,
    /// Initial weights.
    pub init: Init,
    /// The initialisation's name in reports (`VIS-MAE-Generic`, `scratch`, a file stem, ...).
    pub init_name: String,
    /// Fold trained.
    pub fold: usize,
    /// Fraction of the fold's training cases.
    pub fraction: f64,
    /// The splits file, when one was given.
    pub splits: Option<PathBuf>,
    /// Training case ids.
    pub train_cases: Vec<String>,
    /// Validation case ids (model selection).
    pub val_cases: Vec<String>,
    /// Held-out test case ids, when the run has them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test_cases: Vec<String>,
    /// Class names of the labelled set.
    pub classes: Vec<String>,
    /// Multi-label classification (sigmoid outputs); `None` in 0.1 folders, which kept it in
    /// `summary.json`.
    pub multi_label: Option<bool>,
    /// The settings as given.
    pub settings: TaskSettings,
    /// What the network sees.
    pub preprocess: Preprocess,
    /// What the initial weights' encoder was pre-trained on, when they say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoder_preprocess: Option<Preprocess>,
    /// Warm-up epochs (given, or derived from the run length).
    pub warmup_epochs: f64,
    /// Training replicas.
    pub devices: usize,
    /// LayerNorm epsilon of the network (VIS-MAE 1e-6; imported Swin weights 1e-5).
    pub layer_norm_eps: f64,
}

/// The JSON form, which leaves the settings' type to `task`.
#[derive(Deserialize)]
struct FinetuneConfigRepr {
    #[serde(default = "schema_one")]
    schema: u32,
    #[serde(default = "version_zero_one")]
    vismae: String,
    task: Task,
    data: PathBuf,
    init: Init,
    #[serde(default)]
    init_name: Option<String>,
    fold: usize,
    fraction: f64,
    #[serde(default)]
    splits: Option<PathBuf>,
    train_cases: Vec<String>,
    val_cases: Vec<String>,
    #[serde(default)]
    test_cases: Vec<String>,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    multi_label: Option<bool>,
    settings: Value,
    #[serde(default)]
    preprocess: Option<Preprocess>,
    #[serde(default)]
    encoder_preprocess: Option<Preprocess>,
    #[serde(default)]
    warmup_epochs: Option<f64>,
    #[serde(default)]
    devices: Option<usize>,
    #[serde(default)]
    layer_norm_eps: Option<f64>,
}

impl TryFrom<FinetuneConfigRepr> for FinetuneConfig {
    type Error = String;
    fn try_from(r: FinetuneConfigRepr) -> Result<Self, String> {
        let settings = match r.task {
            Task::Segmentation => {
                TaskSettings::Segmentation(serde_json::from_value(r.settings).map_err(|e| format!("settings: {e}"))?)
            }
            Task::Classification => {
                TaskSettings::Classification(serde_json::from_value(r.settings).map_err(|e| format!("settings: {e}"))?)
            }
        };
        // what vismae 0.1 derived: grey replicated to in_chans (3), stored values + min-max for
        // segmentation, the format's rules and no normalisation for classification, the
        // settings' warm-up (40 / 10 epochs unless given)
        let (size, in_chans, warmup, devices) = match &settings {
            TaskSettings::Segmentation(s) => {
                (s.size, s.in_chans.unwrap_or(3), s.warmup_epochs.unwrap_or(40.0), s.devices)
            }
            TaskSettings::Classification(s) => {
                (s.size, s.in_chans.unwrap_or(3), s.warmup_epochs.unwrap_or(10.0), s.devices)
            }
        };
        let preprocess = r.preprocess.unwrap_or_else(|| match r.task {
            Task::Segmentation => Preprocess {
                size,
                in_chans,
                channels: Channels::Grey,
                intensity: Intensity::Stored,
                norm: InputNorm::MinMax,
            },
            Task::Classification => Preprocess {
                size,
                in_chans,
                channels: Channels::Grey,
                intensity: Intensity::default(),
                norm: InputNorm::None,
            },
        });
        let init_name = r.init_name.unwrap_or_else(|| default_init_name(&r.init));
        Ok(FinetuneConfig {
            schema: r.schema,
            vismae: r.vismae,
            task: r.task,
            data: r.data,
            init: r.init,
            init_name,
            fold: r.fold,
            fraction: r.fraction,
            splits: r.splits,
            train_cases: r.train_cases,
            val_cases: r.val_cases,
            test_cases: r.test_cases,
            classes: r.classes,
            multi_label: r.multi_label,
            settings,
            preprocess,
            encoder_preprocess: r.encoder_preprocess,
            warmup_epochs: r.warmup_epochs.unwrap_or(warmup),
            devices: r.devices.unwrap_or(devices).max(1),
            layer_norm_eps: r.layer_norm_eps.unwrap_or(1e-6),
        })
    }
}

/// The name of an initialisation without a model card: `scratch`, `VIS-MAE-Generic` or
/// `VIS-MAE-<modality>` for the weights of a vismae pre-training run (read from its
/// `config.json`), else the file's stem.
pub fn default_init_name(init: &Init) -> String {
    let Some(p) = init.path() else { return "scratch".into() };
    if let Some(run) = p.parent()
        && let Ok(cfg) = PretrainConfig::read(run)
    {
        return cfg.name();
    }
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| init.to_string());
    name.split('.').next().unwrap_or(&name).to_string()
}

impl FinetuneConfig {
    /// Reads `RUN/config.json` of a fine-tuning run, which must be of `task` when one is given.
    pub fn read(run: &Path, task: Option<Task>) -> Result<Self, RunError> {
        let path = run.join("config.json");
        let v: Value = read_json(&path).map_err(|e| match e {
            RunError::Io { path, source } => RunError::Io {
                path,
                source: std::io::Error::new(source.kind(), format!("{source} (is this a `vismae finetune` run?)")),
            },
            other => other,
        })?;
        check_schema(&path, &v)?;
        if v.get("task").is_none() {
            return Err(corrupt(&path, "it has no task (is this a pre-training run?)"));
        }
        let cfg: Self = serde_json::from_value(v).map_err(|e| corrupt(&path, e))?;
        match task {
            Some(t) if cfg.task != t => {
                Err(RunError::settings(format!("{} is a {} run, not {t}", run.display(), cfg.task)))
            }
            _ => Ok(cfg),
        }
    }

    /// Writes `RUN/config.json`.
    pub fn write(&self, run: &RunDir) -> Result<(), RunError> {
        run.write_json("config.json", self)
    }

    /// Segmentation settings, if this is a segmentation run.
    pub fn seg(&self) -> Option<&SegSettings> {
        match &self.settings {
            TaskSettings::Segmentation(s) => Some(s),
            TaskSettings::Classification(_) => None,
        }
    }

    /// Classification settings, if this is a classification run.
    pub fn cls(&self) -> Option<&ClsSettings> {
        match &self.settings {
            TaskSettings::Classification(s) => Some(s),
            TaskSettings::Segmentation(_) => None,
        }
    }

    /// The network's variant.
    pub fn variant(&self) -> crate::Variant {
        match &self.settings {
            TaskSettings::Segmentation(s) => s.variant,
            TaskSettings::Classification(s) => s.variant,
        }
    }

    /// Epochs of the run.
    pub fn epochs(&self) -> usize {
        match &self.settings {
            TaskSettings::Segmentation(s) => s.epochs,
            TaskSettings::Classification(s) => s.epochs,
        }
    }

    /// Whether a classification run is multi-label: from the config, else (0.1 folders) from
    /// `summary.json`; an error when neither says, rather than a guess.
    pub fn is_multi_label(&self, run: &Path) -> Result<bool, RunError> {
        if let Some(m) = self.multi_label {
            return Ok(m);
        }
        match ClsSummary::read(run) {
            Ok(s) => Ok(s.multi_label),
            Err(e) => Err(RunError::Corrupt {
                path: run.join("config.json"),
                reason: format!(
                    "this run's config does not say whether it is multi-label, and its summary.json cannot tell ({e}): finish the run, or add \"multi_label\": true|false to config.json"
                ),
            }),
        }
    }
}

/// A finite number, or `None` (`null` in JSON) for NaN and infinities.
pub fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `summary.json` of a segmentation fine-tuning run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegSummary {
    /// Best validation foreground Dice (null when no validation case had a foreground class).
    pub best_val_dice: Option<f64>,
    /// Its epoch (1-based).
    pub best_epoch: usize,
    /// Training images (2-D slices).
    pub train_images: usize,
    /// Validation images.
    pub val_images: usize,
    /// Classes, background included.
    pub classes: usize,
    /// Tensors applied from the initial weights.
    pub tensors_transferred: usize,
    /// Seconds spent.
    pub seconds: f64,
}

impl SegSummary {
    /// Reads `RUN/summary.json`.
    pub fn read(run: &Path) -> Result<Self, RunError> {
        read_json(&run.join("summary.json"))
    }
}

/// `summary.json` of a classification fine-tuning run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClsSummary {
    /// Lowest validation loss.
    pub best_val_loss: f64,
    /// Its epoch (1-based).
    pub best_epoch: usize,
    /// Validation macro ROC AUC at that epoch.
    pub val_auc_macro_at_best: Option<f64>,
    /// Class names.
    pub classes: Vec<String>,
    /// Multi-label run.
    pub multi_label: bool,
    /// Tensors applied from the initial weights.
    pub tensors_transferred: usize,
    /// Seconds spent.
    pub seconds: f64,
}

impl ClsSummary {
    /// Reads `RUN/summary.json`.
    pub fn read(run: &Path) -> Result<Self, RunError> {
        read_json(&run.join("summary.json"))
    }
}

/// Dice, precision and recall of one class (null: undefined, e.g. the class is absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassScoreRecord {
    /// Dice.
    pub dice: Option<f64>,
    /// Precision.
    pub precision: Option<f64>,
    /// Recall.
    pub recall: Option<f64>,
}

/// The foreground mean of a segmentation evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ForegroundMean {
    /// Mean over foreground classes of the per-class mean Dice.
    pub dice: Option<f64>,
}

/// `summary.json` of `vismae evaluate seg`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegEvaluation {
    /// Case -> class -> scores.
    pub per_case: BTreeMap<String, BTreeMap<String, ClassScoreRecord>>,
    /// Class -> mean over cases (undefined values left out).
    pub mean: BTreeMap<String, ClassScoreRecord>,
    /// The headline number.
    pub foreground_mean: ForegroundMean,
    /// Classes scored (background included).
    pub classes: usize,
    /// Cases scored.
    pub cases: usize,
    /// How the numbers are defined.
    pub semantics: String,
}

impl SegEvaluation {
    /// Reads an evaluation's `summary.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self, RunError> {
        read_json(&dir.join("summary.json"))
    }

    /// Mean over foreground classes of the mean `metric` (`precision` or `recall`).
    pub fn foreground(&self, metric: fn(&ClassScoreRecord) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.mean.iter().filter(|(c, _)| c.as_str() != "0").filter_map(|(_, s)| metric(s)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// One ranking metric of a classification evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AucRecord {
    /// Per class (binary: class 1 only).
    pub per_class: Vec<Option<f64>>,
    /// Unweighted mean over classes.
    #[serde(rename = "macro")]
    pub macro_avg: Option<f64>,
    /// Mean weighted by positives.
    pub weighted: Option<f64>,
    /// Over all (class, sample) pairs.
    pub micro: Option<f64>,
}

/// `summary.json` of `vismae evaluate cls`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClsEvaluation {
    /// ROC AUC.
    pub roc_auc: AucRecord,
    /// Average precision (sklearn `average_precision_score`).
    pub average_precision: AucRecord,
    /// Trapezoidal area under the precision-recall curve.
    pub pr_auc_trapezoid: AucRecord,
    /// Samples scored.
    pub samples: usize,
    /// Classes.
    pub classes: usize,
    /// Multi-label.
    pub multi_label: bool,
}

impl ClsEvaluation {
    /// Reads an evaluation's `summary.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self, RunError> {
        read_json(&dir.join("summary.json"))
    }
}

/// Any run folder's config.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum RunRecord {
    /// A pre-training run.
    Pretrain(PretrainConfig),
    /// A fine-tuning run.
    Finetune(FinetuneConfig),
}

impl RunRecord {
    /// Reads `RUN/config.json`, whichever kind of run it is.
    pub fn read(run: &Path) -> Result<Self, RunError> {
        let path = run.join("config.json");
        let v: Value = read_json(&path).map_err(|e| RunError::Corrupt {
            path: path.clone(),
            reason: format!("{e} (is this a vismae run folder?)"),
        })?;
        if v.get("task").is_some() {
            FinetuneConfig::read(run, None).map(RunRecord::Finetune)
        } else if v.get("total_steps").is_some() {
            PretrainConfig::read(run).map(RunRecord::Pretrain)
        } else {
            Err(corrupt(&path, "neither a pre-training nor a fine-tuning config"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fine-tuning config exactly as vismae 0.1 wrote it.
    const V01_SEG: &str = r#"{
      "task": "segmentation", "data": "/data/set", "init": "scratch", "fold": 0, "fraction": 0.25,
      "splits": null, "train_cases": ["a"], "val_cases": ["b"], "classes": ["background", "x"],
      "settings": {"variant": "tiny", "size": 64, "in_chans": 3, "epochs": 6, "warmup_epochs": 1.0,
        "batch_size": 4, "lr": 0.001, "min_lr": 0.0, "betas": [0.9, 0.95], "weight_decay": 0.05,
        "dice_weight": 0.4, "ce_weight": 0.6, "augment": "reference", "plane": "axial", "seed": 0,
        "decoder_init": "mae", "checkpoint_every": 1, "keep_checkpoints": 2}
    }"#;

    #[test]
    fn version_one_folders_read_as_they_ran() {
        let cfg: FinetuneConfig = serde_json::from_str(V01_SEG).unwrap();
        assert_eq!(
            (cfg.schema, cfg.task, cfg.warmup_epochs, cfg.init_name.as_str()),
            (1, Task::Segmentation, 1.0, "scratch")
        );
        assert_eq!(cfg.preprocess.norm, InputNorm::MinMax);
        assert_eq!(cfg.preprocess.intensity, Intensity::Stored);
        assert_eq!((cfg.preprocess.size, cfg.preprocess.in_chans), (64, 3));
        assert_eq!(cfg.multi_label, None);
        // written back, it is schema-2-shaped and reads the same
        let again: FinetuneConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(again, cfg);
    }

    #[test]
    fn newer_schemas_name_their_writer() {
        let dir = std::env::temp_dir().join(format!("vismae-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut v: Value = serde_json::from_str(V01_SEG).unwrap();
        v["schema"] = serde_json::json!(99);
        v["vismae"] = serde_json::json!("9.0.0");
        std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
        let e = FinetuneConfig::read(&dir, None).unwrap_err().to_string();
        assert!(e.contains("vismae 9.0.0") && e.contains("schema 99"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
