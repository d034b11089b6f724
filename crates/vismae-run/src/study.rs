//! The study file of `vismae study` (the paper's protocol as one command) and the resolved study a
//! study folder keeps (`DIR/study.json`), so that running the command again continues it, and a
//! changed file is refused with its differences, or, when it only adds datasets, initialisations
//! or fractions, runs just the new cells.
//!
//! ```toml
//! reference = "scratch"            # the initialisation every other one is compared with
//! folds = 5                        # k-fold CV per dataset, grouped by patient where known
//! fractions = [0.05, 0.1, 0.25, 0.5, 0.8, 1.0]
//! seed = 0
//! selection = "inner"              # epoch chosen on an inner validation split ("last": the last epoch)
//! resamples = 10000                # paired bootstrap resamples
//!
//! [finetune]                       # fine-tuning settings of every cell
//! variant = "tiny"
//! epochs = 10
//!
//! [by_fraction."1"]                # the cells at one fraction (over the dataset's settings)
//! epochs = 4
//!
//! [[dataset]]
//! name = "MNI tissue"
//! data = "path/to/labelled/set"
//! task = "segmentation"
//!
//! [[init]]
//! name = "VIS-MAE"
//! weights = "runs/mae/weights.safetensors"
//!
//! [[init]]
//! name = "scratch"
//! weights = "scratch"
//!
//! [[init]]
//! name = "VIS-MAE, probe"
//! weights = "runs/mae/weights.safetensors"
//! finetune = { freeze_encoder = true }   # this initialisation's own settings
//!
//! [[init]]
//! name = "nnU-Net"
//! predictions = "nnunet/fold_{k}"  # another tool's predictions on the study's folds: scored, not trained
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RunError;
use crate::vocab::{GroupBy, Task};

/// How a cell's weights are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// The epoch with the best score on an inner validation split of the training part (never
    /// the test fold).
    #[default]
    Inner,
    /// The last epoch (the inner split still logs validation scores).
    Last,
}

/// One labelled set of a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyDataset {
    /// Name in tables and folders.
    pub name: String,
    /// Any labelled layout vismae reads (relative paths are relative to the study file).
    pub data: PathBuf,
    /// What is learnt.
    pub task: Task,
    /// Settings of this dataset's cells over the study's `[finetune]` ones.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub finetune: toml::Table,
}

/// One initialisation of a study: weights (or `scratch`) to fine-tune, or another tool's
/// predictions to score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyInit {
    /// Name in tables and folders.
    pub name: String,
    /// A weights file, or `scratch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// A folder of predictions per fold: `{k}` (or `{fold}`) is the fold, `{fraction}` the label
    /// fraction (without it, the predictions are of the whole training part, fraction 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<String>,
    /// Settings of this initialisation's cells over the dataset's and the study's (a recipe that
    /// belongs to these weights, e.g. a lower encoder learning rate, or a linear probe).
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub finetune: toml::Table,
}

fn paper_fractions() -> Vec<f64> {
    vec![0.05, 0.1, 0.25, 0.5, 0.8, 1.0]
}

fn five() -> usize {
    5
}

fn inner() -> f64 {
    0.2
}

fn ten_thousand() -> usize {
    10_000
}

/// A study file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    /// The initialisation every other one is compared with.
    pub reference: String,
    /// Folds of the cross-validation of each dataset.
    #[serde(default = "five")]
    pub folds: usize,
    /// Label fractions (nested: each subset inside every larger one).
    #[serde(default = "paper_fractions")]
    pub fractions: Vec<f64>,
    /// Seed of the folds, the fine-tuning runs and the bootstrap.
    #[serde(default)]
    pub seed: u64,
    /// How each cell's weights are chosen.
    #[serde(default)]
    pub selection: Selection,
    /// The inner validation share of each fold's training part (for `selection = "inner"`, and
    /// the validation scores logged either way).
    #[serde(default = "inner")]
    pub inner_fraction: f64,
    /// Keep the cases of one patient together (when the layout knows it).
    #[serde(default)]
    pub group_by: GroupBy,
    /// Bootstrap resamples of the paired intervals.
    #[serde(default = "ten_thousand")]
    pub resamples: usize,
    /// Cells run at once (default: one per CPU core on the CPU build, one on a GPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// Keep each cell's training checkpoints once it is scored (they are removed by default: the
    /// kept weights, metrics, predictions and scores stay).
    #[serde(default)]
    pub keep_checkpoints: bool,
    /// Fine-tuning settings of every cell (the keys of `finetune seg|cls`; keys of the other
    /// task are ignored for a dataset of this task).
    #[serde(default)]
    pub finetune: toml::Table,
    /// Settings of the cells at one label fraction (`[by_fraction."1"]`, keyed by the fraction as
    /// written), over the dataset's: e.g. fewer epochs where there are many more labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_fraction: BTreeMap<String, toml::Table>,
    /// The labelled sets.
    #[serde(rename = "dataset", default)]
    pub datasets: Vec<StudyDataset>,
    /// The initialisations.
    #[serde(rename = "init", default)]
    pub inits: Vec<StudyInit>,
}

impl StudyFile {
    /// Reads a study file; relative paths (datasets, weights, predictions) become relative to
    /// its folder.
    pub fn read(path: &Path) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path).map_err(RunError::io(path))?;
        let mut s: StudyFile = toml::from_str(&text).map_err(|e| RunError::Corrupt {
            path: path.into(),
            reason: format!("not a study file: {}", e.message()),
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let abs = |p: &Path| -> PathBuf {
            let p = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
            std::path::absolute(&p).unwrap_or(p)
        };
        for d in &mut s.datasets {
            d.data = abs(&d.data);
        }
        for i in &mut s.inits {
            if let Some(w) = i.weights.as_mut().filter(|w| !w.eq_ignore_ascii_case("scratch")) {
                *w = abs(Path::new(w.as_str())).display().to_string();
            }
            if let Some(p) = i.predictions.as_mut() {
                *p = abs(Path::new(p.as_str())).display().to_string();
            }
        }
        s.validate().map_err(|reason| RunError::Corrupt { path: path.into(), reason })?;
        Ok(s)
    }

    /// Checks what cannot work.
    pub fn validate(&self) -> Result<(), String> {
        let unique = |names: Vec<&str>, what: &str| -> Result<(), String> {
            let mut seen = std::collections::HashSet::new();
            match names.into_iter().find(|n| !seen.insert(n.to_ascii_lowercase())) {
                Some(n) => Err(format!("two {what}s are named {n:?}")),
                None => Ok(()),
            }
        };
        unique(self.datasets.iter().map(|d| d.name.as_str()).collect(), "dataset")?;
        unique(self.inits.iter().map(|i| i.name.as_str()).collect(), "init")?;
        if self.datasets.is_empty() || self.inits.is_empty() {
            return Err("a study needs at least one [[dataset]] and one [[init]]".into());
        }
        if !self.inits.iter().any(|i| i.name == self.reference) {
            return Err(format!("reference {:?} is not one of the [[init]] names", self.reference));
        }
        for i in &self.inits {
            if i.weights.is_some() == i.predictions.is_some() {
                return Err(format!("init {:?}: give either weights (a file or \"scratch\") or predictions", i.name));
            }
        }
        if self.folds < 2 {
            return Err(format!("folds = {}: at least 2", self.folds));
        }
        if self.fractions.is_empty() || self.fractions.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err(format!("fractions {:?} must be in (0, 1]", self.fractions));
        }
        if !(self.inner_fraction > 0.0 && self.inner_fraction < 1.0) {
            return Err(format!("inner_fraction {} must be in (0, 1)", self.inner_fraction));
        }
        if let Some(k) = self
            .by_fraction
            .keys()
            .find(|k| !k.parse::<f64>().is_ok_and(|f| self.fractions.iter().any(|g| (g - f).abs() < 1e-9)))
        {
            return Err(format!("[by_fraction.{k:?}] is not one of the fractions {:?}", self.fractions));
        }
        if self.resamples < 100 {
            return Err(format!("resamples = {}: at least 100 (10,000 recommended)", self.resamples));
        }
        Ok(())
    }

    /// What makes `self` (a new file) unable to continue the study `old`: every difference except
    /// added datasets, initialisations and fractions, and the reference, the resamples, the jobs
    /// and `keep_checkpoints` (which change only the statistics, the speed or the disk used).
    pub fn differences_from(&self, old: &StudyFile) -> Vec<String> {
        let mut d = Vec::new();
        let mut cmp = |what: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{what}: {b} -> {a}"));
            }
        };
        cmp("folds", self.folds.to_string(), old.folds.to_string());
        cmp("seed", self.seed.to_string(), old.seed.to_string());
        cmp("selection", format!("{:?}", self.selection), format!("{:?}", old.selection));
        cmp("inner_fraction", self.inner_fraction.to_string(), old.inner_fraction.to_string());
        cmp("group_by", self.group_by.to_string(), old.group_by.to_string());
        cmp("[finetune]", table_text(&self.finetune), table_text(&old.finetune));
        for (k, t) in &old.by_fraction {
            let new = self.by_fraction.get(k).map(table_text).unwrap_or_default();
            cmp(&format!("[by_fraction.{k:?}]"), new, table_text(t));
        }
        for k in self.by_fraction.keys().filter(|k| !old.by_fraction.contains_key(*k)) {
            // settings for a fraction the old study ran change its cells; for a new one they do not
            if old.fractions.iter().any(|f| k.parse::<f64>().is_ok_and(|g| (g - f).abs() < 1e-9)) {
                d.push(format!("[by_fraction.{k:?}] was added"));
            }
        }
        for o in &old.datasets {
            match self.datasets.iter().find(|n| n.name == o.name) {
                None => d.push(format!("dataset {:?} was removed", o.name)),
                Some(n) if n != o => d.push(format!("dataset {:?} changed", o.name)),
                Some(_) => {}
            }
        }
        for o in &old.inits {
            match self.inits.iter().find(|n| n.name == o.name) {
                None => d.push(format!("init {:?} was removed", o.name)),
                Some(n) if n != o => d.push(format!("init {:?} changed", o.name)),
                Some(_) => {}
            }
        }
        for f in &old.fractions {
            if !self.fractions.iter().any(|g| (g - f).abs() < 1e-12) {
                d.push(format!("fraction {f} was removed"));
            }
        }
        d
    }
}

fn table_text(t: &toml::Table) -> String {
    let sorted: BTreeMap<&String, String> = t.iter().map(|(k, v)| (k, v.to_string())).collect();
    format!("{sorted:?}")
}

/// A file or folder name for a study's name (letters, digits, `-`, `_`, `.`).
pub fn slug(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "x".into() } else { s }
}

/// A fraction as folders name it (`0.05`, `1`).
pub fn fraction_name(f: f64) -> String {
    let s = format!("{f}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
reference = "scratch"
folds = 2
fractions = [0.5, 1.0]
[finetune]
variant = "tiny"
epochs = 2
[[dataset]]
name = "MNI tissue"
data = "set.csv"
task = "segmentation"
[[init]]
name = "VIS-MAE"
weights = "mae/weights.safetensors"
[[init]]
name = "scratch"
weights = "scratch"
"#;

    #[test]
    fn study_files_read_validate_and_compare() {
        let dir = std::env::temp_dir().join(format!("vismae-study-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.toml"), FILE).unwrap();
        let s = StudyFile::read(&dir.join("s.toml")).unwrap();
        assert!(s.datasets[0].data.is_absolute() && s.datasets[0].data.ends_with("set.csv"));
        assert_eq!((s.selection, s.resamples, s.inner_fraction), (Selection::Inner, 10_000, 0.2));
        let mut more = s.clone();
        more.fractions.push(0.25);
        more.inits.push(StudyInit {
            name: "ImageNet".into(),
            weights: Some("swin.pth".into()),
            predictions: None,
            finetune: toml::Table::new(),
        });
        more.reference = "ImageNet".into();
        assert!(more.differences_from(&s).is_empty(), "additions and the reference are allowed");
        let mut changed = s.clone();
        changed.finetune.insert("epochs".into(), toml::Value::Integer(3));
        changed.fractions = vec![1.0];
        let d = changed.differences_from(&s);
        assert!(
            d.iter().any(|x| x.contains("[finetune]")) && d.iter().any(|x| x.contains("fraction 0.5 was removed")),
            "{d:?}"
        );
        std::fs::write(dir.join("bad.toml"), FILE.replace("reference = \"scratch\"", "reference = \"nope\"")).unwrap();
        assert!(StudyFile::read(&dir.join("bad.toml")).unwrap_err().to_string().contains("nope"));
        assert_eq!(slug("MNI tissue"), "MNI-tissue");
        let _ = std::fs::remove_dir_all(dir);
    }
}
