//! The results of a study, from its scored cells: `DIR/report/per_case.csv` (every test case's
//! value under every cell, so anyone can redo the statistics), tables in the paper's shape (rows =
//! initialisations, columns = dataset x metric, mean ± sd over folds, one table per label
//! fraction), label-efficiency figures, and paired statistics against the reference in
//! `DIR/report/stats.csv`:
//! - segmentation (Dice, precision, recall, each a case's mean over its foreground classes):
//!   paired over the test cases scored under both initialisations, pooled over folds; the mean
//!   difference, a seeded paired bootstrap 95 % interval, and the Wilcoxon signed-rank p-value;
//! - ROC AUC and PR AUC (average precision): the mean over folds of the per-fold difference; a
//!   paired bootstrap of it (cases resampled within each fold, the same cases for both); DeLong's
//!   test for binary ROC AUC (per-fold differences and variances combined over folds), the
//!   bootstrap p-value otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use vismae_metrics::stats::{Resampler, bootstrap_mean, delong, percentile_interval, wilcoxon};
use vismae_metrics::{Metric, one_vs_rest};
use vismae_run::study::{Selection, StudyFile, fraction_name, slug};
use vismae_run::{ClsEvaluation, SegEvaluation, Task};

use super::cells::{Cell, CellState};
use crate::error::{Result, WorkflowError};
use crate::evaluate::read_cls_results;

/// The segmentation metrics a study reports, each a case's mean over its foreground classes.
const SEG_METRICS: [&str; 3] = ["Dice", "Precision", "Recall"];
/// The classification metrics.
const CLS_METRICS: [&str; 2] = ["ROC AUC", "PR AUC"];

/// One test case's classification outcome under one cell.
#[derive(Clone, Debug)]
struct ClsCase {
    truth: Vec<bool>,
    scores: Vec<f64>,
}

/// What one scored cell gives.
#[derive(Clone, Debug, Default)]
struct CellResult {
    /// Segmentation: case -> metric -> value.
    seg: BTreeMap<String, BTreeMap<&'static str, f64>>,
    /// Classification: case -> outcome.
    cls: BTreeMap<String, ClsCase>,
    /// The fold's value of each metric.
    fold: BTreeMap<&'static str, f64>,
}

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v.into_iter().filter(|x| x.is_finite()).fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

fn read_cell(cell: &Cell, task: Task) -> Result<CellResult> {
    let test = cell.dir.join("test");
    let mut r = CellResult::default();
    match task {
        Task::Segmentation => {
            let e = SegEvaluation::read(&test)?;
            for (case, classes) in &e.per_case {
                let fg = |f: fn(&vismae_run::schema::ClassScoreRecord) -> Option<f64>| {
                    mean(classes.iter().filter(|(c, _)| c.as_str() != "0").filter_map(|(_, s)| f(s)))
                };
                let m = BTreeMap::from([
                    ("Dice", fg(|s| s.dice)),
                    ("Precision", fg(|s| s.precision)),
                    ("Recall", fg(|s| s.recall)),
                ]);
                r.seg.insert(case.clone(), m);
            }
            for metric in SEG_METRICS {
                r.fold.insert(metric, mean(r.seg.values().map(|m| m[metric])));
            }
        }
        Task::Classification => {
            let e = ClsEvaluation::read(&test)?;
            let p = read_cls_results(&test.join("predictions.csv"))?;
            for ((id, t), s) in p.ids.iter().zip(&p.targets).zip(&p.scores) {
                r.cls.insert(id.clone(), ClsCase { truth: t.clone(), scores: s.clone() });
            }
            r.fold.insert("ROC AUC", e.roc_auc.macro_avg.unwrap_or(f64::NAN));
            r.fold.insert("PR AUC", e.average_precision.macro_avg.unwrap_or(f64::NAN));
        }
    }
    Ok(r)
}

/// A row of `stats.csv`.
#[derive(Clone, Debug)]
pub struct StatRow {
    /// Dataset name.
    pub dataset: String,
    /// Label fraction.
    pub fraction: f64,
    /// Metric.
    pub metric: String,
    /// Initialisation compared.
    pub init: String,
    /// The reference it is compared with.
    pub reference: String,
    /// Paired test cases.
    pub n: usize,
    /// Mean difference (init - reference).
    pub mean_diff: f64,
    /// 95 % interval of the difference.
    pub ci: (f64, f64),
    /// Two-sided p-value.
    pub p: f64,
    /// The test that gave `p`.
    pub test: String,
}

/// A seed for one comparison, from the study's seed and its names.
fn comparison_seed(seed: u64, parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in parts.join("\u{1f}").bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `metric` (ROC AUC or PR AUC, macro over classes; binary: class 1) of cases.
fn auc(metric: &str, cases: &[&ClsCase]) -> f64 {
    let targets: Vec<Vec<bool>> = cases.iter().map(|c| c.truth.clone()).collect();
    let scores: Vec<Vec<f64>> = cases.iter().map(|c| c.scores.clone()).collect();
    let classes = scores.first().map_or(0, Vec::len);
    let binary = classes == 2 && targets.iter().all(|t| t.iter().filter(|x| **x).count() == 1);
    let m = if metric == "ROC AUC" { Metric::RocAuc } else { Metric::AveragePrecision };
    one_vs_rest(m, &targets, &scores, binary).macro_avg
}

/// Paired comparisons of `init` with `reference` over the folds of one dataset and fraction.
fn compare(
    study: &StudyFile,
    task: Task,
    names: (&str, f64, &str, &str),
    init: &BTreeMap<usize, CellResult>,
    reference: &BTreeMap<usize, CellResult>,
) -> Vec<StatRow> {
    let (dataset, fraction, init_name, ref_name) = names;
    let folds: Vec<usize> = init.keys().filter(|k| reference.contains_key(k)).copied().collect();
    let row = |metric: &str, n: usize, mean_diff: f64, ci: (f64, f64), p: f64, test: &str| StatRow {
        dataset: dataset.into(),
        fraction,
        metric: metric.into(),
        init: init_name.into(),
        reference: ref_name.into(),
        n,
        mean_diff,
        ci,
        p,
        test: test.into(),
    };
    let mut out = Vec::new();
    match task {
        Task::Segmentation => {
            for metric in SEG_METRICS {
                let diffs: Vec<f64> = folds
                    .iter()
                    .flat_map(|k| {
                        init[k].seg.iter().filter_map(move |(case, m)| {
                            let r = reference[k].seg.get(case)?.get(metric)?;
                            let v = m.get(metric)?;
                            (v.is_finite() && r.is_finite()).then_some(v - r)
                        })
                    })
                    .collect();
                let seed = comparison_seed(study.seed, &[dataset, &fraction_name(fraction), metric, init_name]);
                let b = bootstrap_mean(&diffs, study.resamples, seed, 0.95);
                let w = wilcoxon(&diffs);
                let (p, test) = match w {
                    Some(w) => (w.p, w.method.name()),
                    None => (1.0, "all-differences-zero"),
                };
                out.push(row(metric, diffs.len(), b.estimate, (b.low, b.high), p, test));
            }
        }
        Task::Classification => {
            // the cases each fold scored under both, in one order
            let paired: Vec<Vec<(&ClsCase, &ClsCase)>> = folds
                .iter()
                .map(|k| init[k].cls.iter().filter_map(|(id, c)| Some((c, reference[k].cls.get(id)?))).collect())
                .collect();
            let n: usize = paired.iter().map(Vec::len).sum();
            for metric in CLS_METRICS {
                let diff_of = |sets: &[Vec<(&ClsCase, &ClsCase)>]| -> f64 {
                    mean(sets.iter().map(|p| {
                        let a: Vec<&ClsCase> = p.iter().map(|x| x.0).collect();
                        let b: Vec<&ClsCase> = p.iter().map(|x| x.1).collect();
                        auc(metric, &a) - auc(metric, &b)
                    }))
                };
                let estimate = diff_of(&paired);
                let seed = comparison_seed(study.seed, &[dataset, &fraction_name(fraction), metric, init_name]);
                let mut rng = Resampler::new(seed);
                let stats: Vec<f64> = (0..study.resamples)
                    .map(|_| {
                        let sets: Vec<Vec<(&ClsCase, &ClsCase)>> =
                            paired.iter().map(|p| rng.resample(p.len()).into_iter().map(|i| p[i]).collect()).collect();
                        diff_of(&sets)
                    })
                    .collect();
                let b = percentile_interval(estimate, &stats, 0.95);
                let binary = paired.iter().flatten().all(|(c, _)| c.scores.len() == 2);
                let (p, test) = if metric == "ROC AUC" && binary {
                    // DeLong per fold, differences and variances combined over the folds
                    let per: Vec<_> = paired
                        .iter()
                        .filter_map(|p| {
                            let labels: Vec<bool> =
                                p.iter().map(|x| x.0.truth.get(1).copied().unwrap_or(false)).collect();
                            let s1: Vec<f64> = p.iter().map(|x| x.0.scores[1]).collect();
                            let s2: Vec<f64> = p.iter().map(|x| x.1.scores[1]).collect();
                            delong(&labels, &s1, &s2)
                        })
                        .collect();
                    let (d, v): (f64, f64) = per
                        .iter()
                        .fold((0.0, 0.0), |(d, v), x| (d + x.auc1 - x.auc2, v + x.var1 + x.var2 - 2.0 * x.cov));
                    let z = if v > 0.0 {
                        d / v.sqrt()
                    } else if d == 0.0 {
                        0.0
                    } else {
                        f64::INFINITY
                    };
                    (2.0 * vismae_metrics::stats::normal_sf(z.abs()), "delong")
                } else {
                    (b.p, "bootstrap")
                };
                out.push(row(metric, n, estimate, (b.low, b.high), p, test));
            }
        }
    }
    out
}

/// One sentence per comparison of a dataset's headline metric (Dice, ROC AUC): better, worse, or
/// no difference shown, with the interval.
pub fn in_words(stats: &[StatRow]) -> Vec<String> {
    stats
        .iter()
        .filter(|s| s.metric == "Dice" || s.metric == "ROC AUC")
        .map(|s| {
            let verdict = if s.ci.0 > 0.0 {
                "better: the 95 % interval of the difference excludes 0"
            } else if s.ci.1 < 0.0 {
                "worse: the 95 % interval of the difference excludes 0"
            } else {
                "no difference shown: the 95 % interval includes 0"
            };
            format!(
                "{} at {:.0} % of the labels: {} vs {}, {} {:+.4} [{:+.4}, {:+.4}] (p = {}, n = {}): {verdict}.",
                s.dataset,
                s.fraction * 100.0,
                s.init,
                s.reference,
                s.metric,
                s.mean_diff,
                s.ci.0,
                s.ci.1,
                if s.p < 0.001 { format!("{:.1e}", s.p) } else { format!("{:.3}", s.p) },
                s.n
            )
        })
        .collect()
}

/// A p-value as tables show it: three decimals, or `<0.001` with the value in scientific form.
fn p_text(p: f64) -> String {
    if !p.is_finite() {
        "–".into()
    } else if p < 0.001 {
        format!("<0.001 ({p:.1e})")
    } else {
        format!("{p:.3}")
    }
}

fn fmt(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { String::new() }
}

/// Writes `out` (the study's own `DIR/report/`, replaced, or a new or empty folder):
/// `per_case.csv`, `stats.csv`, `table.csv`, figures, `report.md` and `report.html`, from the
/// scored cells.
pub fn write(study: &StudyFile, dir: &Path, cells: &[Cell], out: &Path) -> Result<(PathBuf, Vec<StatRow>)> {
    let out = out.to_path_buf();
    if out == dir.join("report") && out.exists() {
        // the study's own report of an earlier run: it is rewritten from the cells
        std::fs::remove_dir_all(&out).map_err(WorkflowError::io(&out))?;
    } else if out.exists() && std::fs::read_dir(&out).map_err(WorkflowError::io(&out))?.next().is_some() {
        return Err(vismae_run::RunError::Occupied(out).into());
    }
    let figdir = out.join("figures");
    std::fs::create_dir_all(&figdir).map_err(WorkflowError::io(&figdir))?;
    // (dataset, fraction key, init) -> fold -> result
    type Key = (usize, u64, usize);
    let mut results: BTreeMap<Key, BTreeMap<usize, CellResult>> = BTreeMap::new();
    let mut missing = Vec::new();
    for c in cells {
        if c.state() != CellState::Scored {
            missing.push(c.label());
            continue;
        }
        let task = study.datasets[c.dataset].task;
        match read_cell(c, task) {
            Ok(r) => {
                results.entry((c.dataset, (c.fraction * 1e6).round() as u64, c.init)).or_default().insert(c.fold, r);
            }
            Err(e) => missing.push(format!("{} ({e})", c.label())),
        }
    }
    let frac = |key: u64| key as f64 / 1e6;
    // per-case values
    let mut per_case = String::from("dataset,fraction,fold,init,case,metric,value\n");
    let q = |s: &str| if s.contains([',', '"']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    for ((d, f, i), folds) in &results {
        let (dn, inn) = (&study.datasets[*d].name, &study.inits[*i].name);
        for (k, r) in folds {
            for (case, m) in &r.seg {
                for (metric, v) in m {
                    let _ =
                        writeln!(per_case, "{},{},{k},{},{},{metric},{}", q(dn), frac(*f), q(inn), q(case), fmt(*v));
                }
            }
            for (case, c) in &r.cls {
                let binary = c.scores.len() == 2;
                for (j, (t, s)) in c.truth.iter().zip(&c.scores).enumerate() {
                    if binary && j == 0 {
                        continue;
                    }
                    let (lk, sk) = if binary {
                        ("label".to_string(), "score".to_string())
                    } else {
                        (format!("label_{j}"), format!("score_{j}"))
                    };
                    let _ =
                        writeln!(per_case, "{},{},{k},{},{},{lk},{}", q(dn), frac(*f), q(inn), q(case), u8::from(*t));
                    let _ = writeln!(per_case, "{},{},{k},{},{},{sk},{s}", q(dn), frac(*f), q(inn), q(case));
                }
            }
        }
    }
    vismae_run::run_dir::write_atomic(&out.join("per_case.csv"), per_case.as_bytes())?;
    // paired statistics against the reference
    let ref_idx = study.inits.iter().position(|i| i.name == study.reference).unwrap_or(0);
    let mut stats = Vec::new();
    for ((d, f, i), folds) in &results {
        if *i == ref_idx {
            continue;
        }
        let Some(reference) = results.get(&(*d, *f, ref_idx)) else { continue };
        let ds = &study.datasets[*d];
        let names = (ds.name.as_str(), frac(*f), study.inits[*i].name.as_str(), study.reference.as_str());
        stats.extend(compare(study, ds.task, names, folds, reference));
    }
    let mut csv = String::from("dataset,fraction,metric,init,reference,n,mean_diff,ci_low,ci_high,p_value,test\n");
    for s in &stats {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{},{}",
            q(&s.dataset),
            s.fraction,
            s.metric,
            q(&s.init),
            q(&s.reference),
            s.n,
            fmt(s.mean_diff),
            fmt(s.ci.0),
            fmt(s.ci.1),
            fmt(s.p),
            s.test
        );
    }
    vismae_run::run_dir::write_atomic(&out.join("stats.csv"), csv.as_bytes())?;
    // tables: one per fraction, rows = inits, columns = dataset x metric, mean ± sd over folds
    let metrics_of = |d: usize| -> Vec<&'static str> {
        match study.datasets[d].task {
            Task::Segmentation => SEG_METRICS.to_vec(),
            Task::Classification => CLS_METRICS.to_vec(),
        }
    };
    let columns: Vec<(usize, &str)> =
        (0..study.datasets.len()).flat_map(|d| metrics_of(d).into_iter().map(move |m| (d, m))).collect();
    let mut fractions: Vec<u64> = results.keys().map(|k| k.1).collect();
    fractions.sort();
    fractions.dedup();
    let mut md = format!(
        "# Study: {} datasets, {} initialisations\n\n{}-fold cross-validation; each cell is tested on its fold's held-out cases, which neither training nor model selection saw; weights of the {} (split {:.0} % of each fold's training part, grouped by {}). Label fractions are nested subsets of the rest. Cells: mean ± sample sd over folds (n = folds). Paired statistics against **{}** in [stats.csv](stats.csv): † marks a difference whose 95 % bootstrap interval ({} resamples) excludes 0. Every test case's value is in [per_case.csv](per_case.csv).\n\n",
        study.datasets.len(),
        study.inits.len(),
        study.folds,
        match study.selection {
            Selection::Inner => "epoch with the best score on an inner validation split",
            Selection::Last => "last epoch (the inner split only logs validation scores)",
        },
        study.inner_fraction * 100.0,
        match study.group_by {
            vismae_run::GroupBy::Patient => "patient",
            vismae_run::GroupBy::Case => "case",
            vismae_run::GroupBy::Similar => "patient and near-duplicate image",
        },
        study.reference,
        study.resamples
    );
    let mut table_csv = String::from("dataset,metric,init,fraction,mean,sd,folds\n");
    let mut html_tables = String::new();
    for f in fractions.iter().rev() {
        let mut t = format!(
            "| initialisation | {} |\n|---|{}\n",
            columns.iter().map(|(d, m)| format!("{}: {m}", study.datasets[*d].name)).collect::<Vec<_>>().join(" | "),
            "---|".repeat(columns.len())
        );
        for (i, init) in study.inits.iter().enumerate() {
            let cells: Vec<String> = columns
                .iter()
                .map(|(d, m)| {
                    let Some(folds) = results.get(&(*d, *f, i)) else { return "–".into() };
                    let v: Vec<f64> = folds.values().filter_map(|r| r.fold.get(m).copied()).collect();
                    let (mean, sd, n) = vismae_report::mean_sd(&v);
                    let _ = writeln!(
                        table_csv,
                        "{},{m},{},{},{},{},{n}",
                        q(&study.datasets[*d].name),
                        q(&init.name),
                        frac(*f),
                        fmt(mean),
                        fmt(sd)
                    );
                    let mark = stats
                        .iter()
                        .find(|s| {
                            s.dataset == study.datasets[*d].name
                                && s.init == init.name
                                && s.metric == *m
                                && (s.fraction - frac(*f)).abs() < 1e-9
                        })
                        .filter(|s| s.ci.0 > 0.0 || s.ci.1 < 0.0)
                        .map(|_| " †")
                        .unwrap_or("");
                    match n {
                        0 => "–".into(),
                        1 => format!("{mean:.4}{mark}"),
                        _ => format!("{mean:.4} ± {sd:.4} (n={n}){mark}"),
                    }
                })
                .collect();
            let _ = writeln!(t, "| {} | {} |", init.name, cells.join(" | "));
        }
        let head = format!("{:.0} % of the training labels", frac(*f) * 100.0);
        let _ = write!(md, "## {head}\n\n{t}\n");
        let _ = write!(
            html_tables,
            "<h2>{}</h2>\n{}",
            vismae_report::html::escape(&head),
            vismae_report::html::md_table_html(&t)
        );
    }
    vismae_run::run_dir::write_atomic(&out.join("table.csv"), table_csv.as_bytes())?;
    // what the headline metric of each dataset shows, in words
    let _ = writeln!(md, "## What the numbers show\n");
    for (d, ds) in study.datasets.iter().enumerate() {
        let mut inputs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in cells.iter().filter(|c| c.dataset == d && c.predictions.is_none()) {
            if let Ok(cfg) = vismae_run::FinetuneConfig::read(&c.dir, Some(ds.task)) {
                let names = inputs.entry(cfg.preprocess.describe()).or_default();
                if !names.contains(&study.inits[c.init].name) {
                    names.push(study.inits[c.init].name.clone());
                }
            }
        }
        if inputs.len() > 1 {
            let list: Vec<String> = inputs.iter().map(|(p, n)| format!("{}: {p}", n.join(", "))).collect();
            let _ = writeln!(
                md,
                "**Note:** on {} the initialisations were fed different inputs ({}), so their differences are not the initialisation's alone; set `intensity` and `norm` in `[finetune]` to compare them on one input.\n",
                ds.name,
                list.join("; ")
            );
        }
    }
    let words = in_words(&stats);
    if words.is_empty() {
        let _ = writeln!(md, "No initialisation could be compared with {} yet.\n", study.reference);
    }
    for w in &words {
        let _ = writeln!(md, "- {w}");
    }
    md.push('\n');
    // paired differences
    let _ = writeln!(md, "## Paired differences against {}\n", study.reference);
    let _ = writeln!(
        md,
        "| dataset | labels | metric | init | n | mean difference | 95 % CI | p | test |\n|---|---|---|---|---|---|---|---|---|"
    );
    for s in &stats {
        let _ = writeln!(
            md,
            "| {} | {:.0} % | {} | {} | {} | {:+.4} | [{:+.4}, {:+.4}]{} | {} | {} |",
            s.dataset,
            s.fraction * 100.0,
            s.metric,
            s.init,
            s.n,
            s.mean_diff,
            s.ci.0,
            s.ci.1,
            if s.ci.0 > 0.0 || s.ci.1 < 0.0 { " †" } else { "" },
            p_text(s.p),
            s.test
        );
    }
    md.push('\n');
    // label-efficiency figures
    let mut figs_md = String::new();
    let mut figs_html = String::new();
    for (d, m) in &columns {
        let lines: Vec<vismae_report::plot::Line> = study
            .inits
            .iter()
            .enumerate()
            .map(|(i, init)| {
                let pts = fractions
                    .iter()
                    .filter_map(|f| {
                        let folds = results.get(&(*d, *f, i))?;
                        let v: Vec<f64> = folds.values().filter_map(|r| r.fold.get(m).copied()).collect();
                        let (mean, sd, n) = vismae_report::mean_sd(&v);
                        (n > 0).then_some((frac(*f) * 100.0, mean, sd))
                    })
                    .collect();
                (init.name.clone(), pts)
            })
            .filter(|(_, pts): &(String, Vec<(f64, f64, f64)>)| !pts.is_empty())
            .collect();
        if lines.is_empty() {
            continue;
        }
        let name = &study.datasets[*d].name;
        let stem = figdir.join(format!("label-efficiency-{}-{}", slug(name), slug(m)));
        let panels = [(format!("{name}: {m} vs labels used"), m.to_string(), lines)];
        let (svg, png) = vismae_report::plot::figure(&stem, &panels, "% of training labels", true)?;
        let caption = format!("Label efficiency on {name}: {m} (mean over folds, error bars: sd)");
        let rel = |p: &Path| p.strip_prefix(&out).unwrap_or(p).display().to_string();
        let _ = write!(figs_md, "![{caption}]({})\n\n*{caption}* ([SVG]({}))\n\n", rel(&png), rel(&svg));
        let svg_text = std::fs::read_to_string(&svg).map_err(WorkflowError::io(&svg))?;
        let _ = writeln!(
            figs_html,
            "<figure>{svg_text}<figcaption>{}</figcaption></figure>",
            vismae_report::html::escape(&caption)
        );
    }
    md.push_str("## Figures\n\n");
    md.push_str(&figs_md);
    if !missing.is_empty() {
        let _ = writeln!(md, "## Cells not in these results\n");
        for m in &missing {
            let _ = writeln!(md, "- {m}");
        }
    }
    vismae_run::run_dir::write_atomic(&out.join("report.md"), md.as_bytes())?;
    let stats_html = vismae_report::html::md_table_html(
        md.split("## Paired differences").nth(1).and_then(|s| s.split("\n\n").nth(1)).unwrap_or_default(),
    );
    let body = format!(
        "<h1>Study</h1>\n{html_tables}<h2>Paired differences against {}</h2>\n{stats_html}<h2>Figures</h2>\n{figs_html}",
        vismae_report::html::escape(&study.reference)
    );
    vismae_run::run_dir::write_atomic(
        &out.join("report.html"),
        vismae_report::html::page("vismae study", &body).as_bytes(),
    )?;
    Ok((out, stats))
}
