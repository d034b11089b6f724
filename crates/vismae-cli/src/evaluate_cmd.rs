//! `vismae evaluate cls|seg`: metrics from prediction files, written as `summary.json` (NaN as
//! null) and a CSV table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{Value, json};
use vismae_data::source::{SliceOptions, Source};
use vismae_metrics::{Metric, SegAccumulator, one_vs_rest};

#[derive(Subcommand, Debug)]
pub enum EvaluateCommand {
    /// Classification: FILE.csv with `id,label,prob_0,...` (or `id,labels,...` with `|`-separated indices for multi-label).
    Cls {
        /// Results CSV.
        #[arg(long)]
        results: PathBuf,
        /// Output folder (summary.json, metrics.csv).
        #[arg(long)]
        out: PathBuf,
    },
    /// Segmentation: label maps (PNG pixel value = class, or NIfTI) matched by file name.
    Seg {
        /// Predicted masks.
        #[arg(long)]
        pred: PathBuf,
        /// Ground-truth masks.
        #[arg(long)]
        gt: PathBuf,
        /// Output folder (summary.json, metrics.csv).
        #[arg(long)]
        out: PathBuf,
        /// Also report the background class 0.
        #[arg(long)]
        include_background: bool,
    },
}

fn num(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

fn fmt(v: f64) -> String {
    if v.is_finite() { format!("{v:.6}") } else { "nan".into() }
}

fn write_out(out: &Path, summary: &Value, csv: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    for (name, text) in [("summary.json", serde_json::to_string_pretty(summary)?), ("metrics.csv", csv.to_string())] {
        let p = out.join(name);
        if p.exists() {
            anyhow::bail!("{} already exists (vismae never overwrites)", p.display());
        }
        std::fs::write(&p, text)?;
    }
    Ok(())
}

pub fn run(cmd: EvaluateCommand) -> anyhow::Result<()> {
    match cmd {
        EvaluateCommand::Cls { results, out } => cls(&results, &out),
        EvaluateCommand::Seg { pred, gt, out, include_background } => seg(&pred, &gt, &out, include_background, false),
    }
}

fn cls(path: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines.next().unwrap_or_default().split(',').map(|h| h.trim().to_string()).collect();
    let col = |n: &str| header.iter().position(|h| h == n);
    let (label_col, multi) = match (col("label"), col("labels")) {
        (Some(c), _) => (c, false),
        (None, Some(c)) => (c, true),
        _ => anyhow::bail!("{}: needs a `label` (or `labels`) column beside `id` and `prob_0..`", path.display()),
    };
    let prob_cols: Vec<usize> = (0..).map_while(|k| col(&format!("prob_{k}"))).collect();
    let classes = prob_cols.len();
    if classes < 2 {
        anyhow::bail!("{}: needs prob_0 and prob_1 at least", path.display());
    }
    let (mut targets, mut scores) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let row = i + 2;
        let get = |c: usize| {
            f.get(c).copied().ok_or_else(|| anyhow::anyhow!("{}: row {row} has too few columns", path.display()))
        };
        let mut t = vec![false; classes];
        let raw = get(label_col)?;
        for part in raw.split('|').filter(|p| !p.is_empty()) {
            let k: usize = part
                .parse()
                .map_err(|_| anyhow::anyhow!("{}: row {row}: label {part:?} is not a class index", path.display()))?;
            if k >= classes {
                anyhow::bail!("{}: row {row}: label {k} but only prob_0..prob_{}", path.display(), classes - 1);
            }
            t[k] = true;
        }
        if !multi && t.iter().filter(|&&x| x).count() != 1 {
            anyhow::bail!(
                "{}: row {row}: `label` must hold one class index (use `labels` for multi-label)",
                path.display()
            );
        }
        let s = prob_cols
            .iter()
            .map(|&c| {
                get(c)?
                    .parse::<f64>()
                    .map_err(|_| anyhow::anyhow!("{}: row {row}: probability is not a number", path.display()))
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        targets.push(t);
        scores.push(s);
    }
    let binary = !multi && classes == 2;
    let mut summary = serde_json::Map::new();
    let mut csv = String::from("metric,class,value\n");
    for (name, metric) in [
        ("roc_auc", Metric::RocAuc),
        ("average_precision", Metric::AveragePrecision),
        ("pr_auc_trapezoid", Metric::PrAucTrapezoid),
    ] {
        let a = one_vs_rest(metric, &targets, &scores, binary);
        let classes: Vec<usize> = if binary { vec![1] } else { (0..classes).collect() };
        for (c, v) in classes.iter().zip(&a.per_class) {
            csv.push_str(&format!("{name},{c},{}\n", fmt(*v)));
        }
        for (k, v) in [("macro", a.macro_avg), ("weighted", a.weighted), ("micro", a.micro)] {
            csv.push_str(&format!("{name},{k},{}\n", fmt(v)));
        }
        summary.insert(
            name.into(),
            json!({"per_class": a.per_class.iter().map(|v| num(*v)).collect::<Vec<_>>(), "macro": num(a.macro_avg), "weighted": num(a.weighted), "micro": num(a.micro)}),
        );
    }
    summary.insert("samples".into(), json!(targets.len()));
    summary.insert("classes".into(), json!(classes));
    summary.insert("multi_label".into(), json!(multi));
    let summary = Value::Object(summary);
    write_out(out, &summary, &csv)?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn read_mask(path: &Path) -> anyhow::Result<(Vec<u8>, (usize, usize, usize))> {
    let opts = SliceOptions { skip_empty: false, ..Default::default() };
    let src = Source::open(path, &opts)?;
    let mut values = Vec::new();
    let mut dims = (0, 0, src.len());
    for k in 0..src.len() {
        let img = src.image(k, &opts)?.ok_or_else(|| anyhow::anyhow!("{}: empty slice {k}", path.display()))?;
        let r = img.raster.to_grey();
        dims.0 = r.width;
        dims.1 = r.height;
        for &v in &r.data {
            if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                anyhow::bail!("{}: holds {v}, not a class index", path.display());
            }
            values.push(v as u8);
        }
    }
    Ok((values, dims))
}

pub(crate) fn seg(
    pred_dir: &Path,
    gt_dir: &Path,
    out: &Path,
    include_background: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(gt_dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", gt_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    cases.sort();
    if cases.is_empty() {
        anyhow::bail!("{}: no ground-truth masks", gt_dir.display());
    }
    let mut loaded = Vec::new();
    let mut num_classes = 0usize;
    for gt in &cases {
        let name = gt.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let pred = pred_dir.join(&name);
        if !pred.is_file() {
            anyhow::bail!("case {name}: no prediction {}", pred.display());
        }
        let (g, gd) = read_mask(gt)?;
        let (p, pd) = read_mask(&pred)?;
        if gd != pd {
            anyhow::bail!(
                "case {name}: prediction is {}x{}x{} but the ground truth is {}x{}x{}",
                pd.0,
                pd.1,
                pd.2,
                gd.0,
                gd.1,
                gd.2
            );
        }
        num_classes = num_classes.max(g.iter().chain(&p).copied().max().unwrap_or(0) as usize + 1);
        loaded.push((name, p, g));
    }
    let mut acc = SegAccumulator::default();
    for (_, p, g) in &loaded {
        acc.update(p, g, num_classes);
    }
    let first = if include_background { 0 } else { 1 };
    let class_json = |s: &vismae_metrics::ClassScores| json!({"dice": num(s.dice), "precision": num(s.precision), "recall": num(s.recall)});
    let mut per_case = serde_json::Map::new();
    let mut csv = String::from("case,class,dice,precision,recall\n");
    for ((name, _, _), scores) in loaded.iter().zip(acc.cases()) {
        let mut classes = BTreeMap::new();
        for (c, s) in scores.iter().enumerate().skip(first) {
            classes.insert(c.to_string(), class_json(s));
            csv.push_str(&format!("{name},{c},{},{},{}\n", fmt(s.dice), fmt(s.precision), fmt(s.recall)));
        }
        per_case.insert(name.clone(), json!(classes));
    }
    let agg = acc.aggregate();
    let mut mean = BTreeMap::new();
    for (c, s) in agg.iter().enumerate().skip(first) {
        mean.insert(c.to_string(), class_json(s));
        csv.push_str(&format!("mean,{c},{},{},{}\n", fmt(s.dice), fmt(s.precision), fmt(s.recall)));
    }
    let summary = json!({
        "per_case": per_case,
        "mean": mean,
        "foreground_mean": {"dice": num(acc.foreground_dice())},
        "classes": num_classes,
        "cases": loaded.len(),
        "semantics": "per case and class: dice 2TP/(2TP+FP+FN), NaN (null) when the class is absent from the ground truth; means leave NaN out",
    });
    write_out(out, &summary, &csv)?;
    if !quiet {
        println!(
            "{} cases, {} classes; foreground mean Dice {}",
            loaded.len(),
            num_classes,
            fmt(acc.foreground_dice())
        );
    }
    Ok(())
}
