//! `vismae evaluate cls|seg`: metrics from prediction files, written as `summary.json` (the typed
//! [`ClsEvaluation`] / [`SegEvaluation`], NaN as null) and a CSV table. Segmentation matches each
//! prediction with its ground truth by name: in a folder of label maps, or the cases of a
//! labelled set (predictions named by case id, as `predict --data` names them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vismae_data::labelled::Target;
use vismae_data::source::{SliceOptions, Source};
use vismae_metrics::{ClassScores, Metric, SegAccumulator, one_vs_rest};
use vismae_run::schema::{AucRecord, ClassScoreRecord, ForegroundMean, finite};
use vismae_run::{ClsEvaluation, SegEvaluation};

use crate::error::{Result, WorkflowError};

fn fmt(v: f64) -> String {
    if v.is_finite() { format!("{v:.6}") } else { "nan".into() }
}

/// Writes `summary.json` and `metrics.csv` into `out` (created), never over existing files.
fn write_out(out: &Path, summary: &impl serde::Serialize, csv: &str) -> Result<()> {
    std::fs::create_dir_all(out).map_err(WorkflowError::io(out))?;
    let json = serde_json::to_string_pretty(summary).map_err(|e| WorkflowError::invalid(e.to_string()))?;
    for (name, text) in [("summary.json", json.as_str()), ("metrics.csv", csv)] {
        let p = out.join(name);
        if p.exists() {
            return Err(WorkflowError::invalid(format!("{} already exists (vismae never overwrites)", p.display())));
        }
        vismae_run::run_dir::write_atomic(&p, text.as_bytes())?;
    }
    Ok(())
}

/// Parsed `id,label,prob_0,...` (or `id,labels,...` with `|`-separated indices) rows.
pub struct ClsResults {
    /// Case ids, in file order.
    pub ids: Vec<String>,
    /// True labels per case (one-hot or multi-hot).
    pub targets: Vec<Vec<bool>>,
    /// Scores per case and class.
    pub scores: Vec<Vec<f64>>,
    /// Multi-label file.
    pub multi: bool,
}

/// Reads a predictions CSV in the `evaluate cls` format.
pub fn read_cls_results(path: &Path) -> Result<ClsResults> {
    let bad = |m: String| WorkflowError::invalid(format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(WorkflowError::io(path))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines.next().unwrap_or_default().split(',').map(|h| h.trim().to_string()).collect();
    let col = |n: &str| header.iter().position(|h| h == n);
    let (label_col, multi) = match (col("label"), col("labels")) {
        (Some(c), _) => (c, false),
        (None, Some(c)) => (c, true),
        _ => return Err(bad("needs a `label` (or `labels`) column beside `id` and `prob_0..`".into())),
    };
    let id_col = col("id");
    let prob_cols: Vec<usize> = (0..).map_while(|k| col(&format!("prob_{k}"))).collect();
    let classes = prob_cols.len();
    if classes < 2 {
        return Err(bad("needs prob_0 and prob_1 at least".into()));
    }
    let mut r = ClsResults { ids: Vec::new(), targets: Vec::new(), scores: Vec::new(), multi };
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let row = i + 2;
        let get = |c: usize| f.get(c).copied().ok_or_else(|| bad(format!("row {row} has too few columns")));
        let mut t = vec![false; classes];
        for part in get(label_col)?.split('|').filter(|p| !p.is_empty()) {
            let k: usize = part.parse().map_err(|_| bad(format!("row {row}: label {part:?} is not a class index")))?;
            if k >= classes {
                return Err(bad(format!("row {row}: label {k} but only prob_0..prob_{}", classes - 1)));
            }
            t[k] = true;
        }
        if !multi && t.iter().filter(|&&x| x).count() != 1 {
            return Err(bad(format!("row {row}: `label` must hold one class index (use `labels` for multi-label)")));
        }
        let s = prob_cols
            .iter()
            .map(|&c| get(c)?.parse::<f64>().map_err(|_| bad(format!("row {row}: probability is not a number"))))
            .collect::<Result<Vec<f64>>>()?;
        r.ids.push(id_col.and_then(|c| f.get(c)).map(|s| s.to_string()).unwrap_or_else(|| (row - 1).to_string()));
        r.targets.push(t);
        r.scores.push(s);
    }
    Ok(r)
}

/// `vismae evaluate cls`: ROC AUC, average precision and trapezoid PR AUC (per class, macro,
/// weighted, micro) of a predictions CSV, into `out`.
pub fn cls(path: &Path, out: &Path) -> Result<ClsEvaluation> {
    cls_results(&read_cls_results(path)?, out)
}

/// The rows of `r` whose ids are in `cases`.
pub fn only_cases(r: &ClsResults, cases: &[String]) -> ClsResults {
    let keep: std::collections::HashSet<&str> = cases.iter().map(String::as_str).collect();
    let idx: Vec<usize> = (0..r.ids.len()).filter(|&i| keep.contains(r.ids[i].as_str())).collect();
    ClsResults {
        ids: idx.iter().map(|&i| r.ids[i].clone()).collect(),
        targets: idx.iter().map(|&i| r.targets[i].clone()).collect(),
        scores: idx.iter().map(|&i| r.scores[i].clone()).collect(),
        multi: r.multi,
    }
}

/// [`cls`] of parsed results.
pub fn cls_results(r: &ClsResults, out: &Path) -> Result<ClsEvaluation> {
    let classes = r.scores.first().map_or(0, Vec::len);
    let binary = !r.multi && classes == 2;
    let mut summary = ClsEvaluation { samples: r.targets.len(), classes, multi_label: r.multi, ..Default::default() };
    let mut csv = String::from("metric,class,value\n");
    for (name, metric) in [
        ("roc_auc", Metric::RocAuc),
        ("average_precision", Metric::AveragePrecision),
        ("pr_auc_trapezoid", Metric::PrAucTrapezoid),
    ] {
        let a = one_vs_rest(metric, &r.targets, &r.scores, binary);
        let ks: Vec<usize> = if binary { vec![1] } else { (0..classes).collect() };
        for (c, v) in ks.iter().zip(&a.per_class) {
            csv.push_str(&format!("{name},{c},{}\n", fmt(*v)));
        }
        for (k, v) in [("macro", a.macro_avg), ("weighted", a.weighted), ("micro", a.micro)] {
            csv.push_str(&format!("{name},{k},{}\n", fmt(v)));
        }
        let rec = AucRecord {
            per_class: a.per_class.iter().map(|v| finite(*v)).collect(),
            macro_avg: finite(a.macro_avg),
            weighted: finite(a.weighted),
            micro: finite(a.micro),
        };
        match metric {
            Metric::RocAuc => summary.roc_auc = rec,
            Metric::AveragePrecision => summary.average_precision = rec,
            Metric::PrAucTrapezoid => summary.pr_auc_trapezoid = rec,
        }
    }
    write_out(out, &summary, &csv)?;
    Ok(summary)
}

/// Where the ground truth of a segmentation evaluation is.
#[derive(Clone, Debug)]
pub enum Truth {
    /// A folder of label maps named like the predictions.
    Folder(PathBuf),
    /// A labelled set: the prediction `CASE<ext>` is scored against case `CASE`'s label map.
    Labelled(PathBuf),
}

/// A label map as class indices, with its `(width, height, slices)`.
pub fn read_mask(path: &Path) -> Result<(Vec<u8>, (usize, usize, usize))> {
    let opts = SliceOptions { skip_empty: false, ..Default::default() };
    let src = Source::open(path, &opts)?;
    let mut values = Vec::new();
    let mut dims = (0, 0, src.len());
    for k in 0..src.len() {
        let img = src
            .image(k, &opts)?
            .ok_or_else(|| WorkflowError::invalid(format!("{}: empty slice {k}", path.display())))?;
        let r = img.raster.to_grey();
        dims.0 = r.width;
        dims.1 = r.height;
        for &v in &r.data {
            if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                return Err(WorkflowError::invalid(format!("{}: holds {v}, not a class index", path.display())));
            }
            values.push(v as u8);
        }
    }
    Ok((values, dims))
}

/// A case's ground truth: a label map file, or a DICOM case's RTSTRUCT/SEG.
enum Gt {
    File(PathBuf),
    Annotation { dir: PathBuf, file: PathBuf, rois: Vec<(String, usize)> },
}

impl Gt {
    /// The ground truth as class indices, with its `(width, height, slices)`, as [`read_mask`].
    fn read(&self) -> Result<(Vec<u8>, (usize, usize, usize))> {
        match self {
            Gt::File(p) => read_mask(p),
            Gt::Annotation { dir, file, rois } => {
                let (slices, _) = vismae_data::labelled::annotation_slices(dir, file, rois)?;
                let dims = slices.first().map_or((0, 0, 0), |s| (s.width, s.height, slices.len()));
                Ok((slices.iter().flat_map(|s| s.data.iter().map(|&v| v as u8)).collect(), dims))
            }
        }
    }
}

/// `(case name, prediction, ground truth)` pairs (of `only` cases, when given).
fn pairs(pred_dir: &Path, truth: &Truth, only: Option<&[String]>) -> Result<Vec<(String, PathBuf, Gt)>> {
    let files = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(WorkflowError::io(dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        v.sort();
        Ok(v)
    };
    match truth {
        Truth::Folder(gt_dir) => {
            let cases = files(gt_dir)?;
            if cases.is_empty() {
                return Err(WorkflowError::invalid(format!("{}: no ground-truth masks", gt_dir.display())));
            }
            cases
                .into_iter()
                .map(|gt| {
                    let name = gt.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    let pred = pred_dir.join(&name);
                    if !pred.is_file() {
                        return Err(WorkflowError::invalid(format!("case {name}: no prediction {}", pred.display())));
                    }
                    Ok((name, pred, Gt::File(gt)))
                })
                .collect()
        }
        Truth::Labelled(data) => {
            let set = vismae_data::labelled::open(data)?;
            let mut masks: BTreeMap<&str, Gt> = set
                .samples
                .iter()
                .filter_map(|s| match &s.target {
                    Target::Mask(m) => Some((s.id.as_str(), Gt::File(m.clone()))),
                    Target::Annotation { file, rois } => Some((
                        s.id.as_str(),
                        Gt::Annotation { dir: s.images[0].clone(), file: file.clone(), rois: rois.clone() },
                    )),
                    _ => None,
                })
                .collect();
            let mut out = Vec::new();
            for pred in files(pred_dir)? {
                let name = pred.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if name.contains(".overlay.")
                    || name.contains(".prob-")
                    || name.contains(".probabilities.")
                    || name.ends_with(".seg.dcm")
                {
                    continue;
                }
                let id = vismae_train::predict::stem(&pred);
                if only.is_some_and(|o| !o.contains(&id)) {
                    continue;
                }
                let gt = masks.remove(id.as_str()).ok_or_else(|| {
                    WorkflowError::invalid(format!("{}: no case {id:?} in {}", pred.display(), data.display()))
                })?;
                out.push((id, pred, gt));
            }
            if out.is_empty() {
                return Err(WorkflowError::invalid(format!("{}: no predictions", pred_dir.display())));
            }
            Ok(out)
        }
    }
}

fn record(s: &ClassScores) -> ClassScoreRecord {
    ClassScoreRecord { dice: finite(s.dice), precision: finite(s.precision), recall: finite(s.recall) }
}

/// `vismae evaluate seg`: per-case and mean Dice, precision and recall per class (background only
/// with `include_background`), into `out`.
pub fn seg(pred_dir: &Path, truth: &Truth, out: &Path, include_background: bool) -> Result<SegEvaluation> {
    seg_cases(pred_dir, truth, None, out, include_background)
}

/// [`seg`] of the predictions of `only` cases (of a labelled set; every one must be predicted).
pub fn seg_cases(
    pred_dir: &Path,
    truth: &Truth,
    only: Option<&[String]>,
    out: &Path,
    include_background: bool,
) -> Result<SegEvaluation> {
    let found = pairs(pred_dir, truth, only)?;
    if let Some(o) = only
        && let Some(missing) = o.iter().find(|c| !found.iter().any(|f| &f.0 == *c))
    {
        return Err(WorkflowError::invalid(format!("case {missing}: no prediction in {}", pred_dir.display())));
    }
    let mut loaded = Vec::new();
    let mut num_classes = 0usize;
    for (name, pred, gt) in found {
        let (g, gd) = gt.read()?;
        let (p, pd) = read_mask(&pred)?;
        if gd != pd {
            return Err(WorkflowError::invalid(format!(
                "case {name}: prediction is {}x{}x{} but the ground truth is {}x{}x{}",
                pd.0, pd.1, pd.2, gd.0, gd.1, gd.2
            )));
        }
        num_classes = num_classes.max(g.iter().chain(&p).copied().max().unwrap_or(0) as usize + 1);
        loaded.push((name, p, g));
    }
    let mut acc = SegAccumulator::default();
    for (_, p, g) in &loaded {
        acc.update(p, g, num_classes);
    }
    let first = if include_background { 0 } else { 1 };
    let mut summary = SegEvaluation {
        classes: num_classes,
        cases: loaded.len(),
        semantics: "per case and class: dice 2TP/(2TP+FP+FN), NaN (null) when the class is absent from the ground truth; means leave NaN out".into(),
        ..Default::default()
    };
    let mut csv = String::from("case,class,dice,precision,recall\n");
    for ((name, _, _), scores) in loaded.iter().zip(acc.cases()) {
        let mut classes = BTreeMap::new();
        for (c, s) in scores.iter().enumerate().skip(first) {
            classes.insert(c.to_string(), record(s));
            csv.push_str(&format!("{name},{c},{},{},{}\n", fmt(s.dice), fmt(s.precision), fmt(s.recall)));
        }
        summary.per_case.insert(name.clone(), classes);
    }
    for (c, s) in acc.aggregate().iter().enumerate().skip(first) {
        summary.mean.insert(c.to_string(), record(s));
        csv.push_str(&format!("mean,{c},{},{},{}\n", fmt(s.dice), fmt(s.precision), fmt(s.recall)));
    }
    summary.foreground_mean = ForegroundMean { dice: finite(acc.foreground_dice()) };
    write_out(out, &summary, &csv)?;
    Ok(summary)
}
