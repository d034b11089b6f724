//! Reading finished run folders: what kind of run, which initialisation, dataset, fold and label
//! fraction, its headline metrics (from `RUN/test/summary.json` when the run was evaluated on
//! held-out cases, else the best validation epoch) and its per-step or per-epoch curves.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A pre-training or fine-tuning run folder.
#[derive(Clone, Debug)]
pub struct Run {
    /// The folder.
    pub path: PathBuf,
    /// `pretraining`, `segmentation` or `classification`.
    pub task: String,
    /// Initialisation: `scratch`, `VIS-MAE-Generic`, `VIS-MAE-<modality>` or the weights' file stem.
    pub init: String,
    /// Dataset name (the labelled set's or pre-training set's folder or file name).
    pub dataset: String,
    /// Fold (fine-tuning).
    pub fold: usize,
    /// Fraction of the fold's training cases (fine-tuning; 1 for pre-training).
    pub fraction: f64,
    /// Headline metrics, e.g. `("Dice", 0.81)`.
    pub metrics: Vec<(String, f64)>,
    /// Where the metrics come from: `test` (held-out cases) or `validation`.
    pub source: String,
    /// The lines of `metrics.jsonl`.
    pub curve: Vec<Value>,
    /// Images the run wrote for people (reconstruction grids).
    pub images: Vec<PathBuf>,
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite())
}

fn file_stem(p: &Path) -> String {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.trim_end_matches(".json").trim_end_matches(".csv").to_string()
}

/// The name of an initialisation given as a weights path in a fine-tuning config.
fn init_name(init: &str) -> String {
    if init.eq_ignore_ascii_case("scratch") {
        return "scratch".into();
    }
    let p = Path::new(init);
    let pretrain_cfg = p.parent().map(|d| d.join("config.json"));
    if let Some(cfg) = pretrain_cfg.and_then(|c| read_json(&c).ok()).filter(|c| c.get("total_steps").is_some()) {
        let mods: Vec<&str> =
            cfg["settings"]["modalities"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        return if mods.is_empty() { "VIS-MAE-Generic".into() } else { format!("VIS-MAE-{}", mods.join("+")) };
    }
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| init.into());
    name.split('.').next().unwrap_or(&name).to_string()
}

/// Reads one run folder.
pub fn read_run(path: &Path) -> Result<Run, String> {
    let cfg = read_json(&path.join("config.json")).map_err(|e| format!("{e} (is this a vismae run folder?)"))?;
    let curve: Vec<Value> = std::fs::read_to_string(path.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if cfg.get("total_steps").is_some() {
        let mut images: Vec<PathBuf> = std::fs::read_dir(path.join("reconstructions"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "png"))
            .collect();
        images.sort();
        let mods: Vec<&str> =
            cfg["settings"]["modalities"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let last = curve.iter().rev().take(10).filter_map(|v| num(&v["loss"])).collect::<Vec<_>>();
        let metrics = if last.is_empty() {
            Vec::new()
        } else {
            vec![("MAE loss (last 10 steps)".to_string(), last.iter().sum::<f64>() / last.len() as f64)]
        };
        return Ok(Run {
            path: path.into(),
            task: "pretraining".into(),
            init: if mods.is_empty() { "VIS-MAE-Generic".into() } else { format!("VIS-MAE-{}", mods.join("+")) },
            dataset: cfg["data"].as_str().map(|d| file_stem(Path::new(d))).unwrap_or_default(),
            fold: 0,
            fraction: 1.0,
            metrics,
            source: "training".into(),
            curve,
            images,
        });
    }
    let task = cfg["task"].as_str().ok_or_else(|| format!("{}: no task", path.join("config.json").display()))?;
    let test = read_json(&path.join("test/summary.json")).ok();
    let summary = read_json(&path.join("summary.json")).ok();
    let (metrics, source) = match (task, &test) {
        ("segmentation", Some(t)) => {
            let mut m = vec![("Dice".to_string(), num(&t["foreground_mean"]["dice"]).unwrap_or(f64::NAN))];
            // mean precision and recall over the foreground classes
            let classes: Vec<&Value> = t["mean"].as_object().map(|o| o.values().collect()).unwrap_or_default();
            for key in ["precision", "recall"] {
                let v: Vec<f64> = classes.iter().filter_map(|c| num(&c[key])).collect();
                if !v.is_empty() {
                    let mut name = key.to_string();
                    name[..1].make_ascii_uppercase();
                    m.push((name, v.iter().sum::<f64>() / v.len() as f64));
                }
            }
            (m, "test")
        }
        ("segmentation", None) => {
            let best = summary.as_ref().and_then(|s| num(&s["best_val_dice"])).unwrap_or(f64::NAN);
            (vec![("Dice".to_string(), best)], "validation")
        }
        ("classification", Some(t)) => (
            vec![
                ("ROC AUC".to_string(), num(&t["roc_auc"]["macro"]).unwrap_or(f64::NAN)),
                ("PR AUC (AP)".to_string(), num(&t["average_precision"]["macro"]).unwrap_or(f64::NAN)),
            ],
            "test",
        ),
        _ => {
            let auc = summary.as_ref().and_then(|s| num(&s["val_auc_macro_at_best"])).unwrap_or(f64::NAN);
            (vec![("ROC AUC".to_string(), auc)], "validation")
        }
    };
    Ok(Run {
        path: path.into(),
        task: task.into(),
        init: init_name(cfg["init"].as_str().unwrap_or("scratch")),
        dataset: cfg["data"].as_str().map(|d| file_stem(Path::new(d))).unwrap_or_default(),
        fold: cfg["fold"].as_u64().unwrap_or(0) as usize,
        fraction: cfg["fraction"].as_f64().unwrap_or(1.0),
        metrics,
        source: source.into(),
        curve,
        images: Vec::new(),
    })
}

/// Mean and sample standard deviation (NaN values left out; sd is NaN below two values).
pub fn mean_sd(values: &[f64]) -> (f64, f64, usize) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, 0);
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() } else { f64::NAN };
    (mean, sd, n)
}
