//! `vismae demo`: the whole method with the real commands' engines, on the sample data when it
//! is there (else phantoms). Builds the pre-training and labelled sets, shows a short MAE
//! pre-training run, then runs two studies (`vismae study`) of fine-tuning from vismae's shipped
//! MAE weights against fine-tuning from scratch: Br35H tumour classification at a few per cent
//! and at all of the labels, and Colin27 + AAL structure segmentation at a quarter and at all of
//! the labels, each over several folds with held-out test folds, paired statistics and a verdict
//! in words. Writes one report over both, with `stats.csv` and `per_case.csv` of both studies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use vismae_run::study::fraction_name;
use vismae_run::{PretrainSettings, RunDir, Variant};
use vismae_train::pretrain;

use crate::error::{Result, WorkflowError};
use crate::study::{self, StudySummary};

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Folder for everything the demo writes (new or empty).
    pub out: PathBuf,
    /// Folder filled by `scripts/fetch-sample-data.sh` (its `raw/` files); without it, phantoms.
    pub sample_data: Option<PathBuf>,
    /// Model size (the shipped weights are `tiny`; another size fine-tunes from the demo's own
    /// short pre-training run).
    pub variant: Variant,
    /// Image side (a multiple of 16).
    pub size: usize,
    /// Steps of the short pre-training run (batch 8).
    pub pretrain_steps: usize,
    /// Segmentation fine-tuning epochs per cell.
    pub epochs: usize,
    /// The smaller segmentation label fraction (the larger is 100 %).
    pub fraction: f64,
    /// Classification epochs per cell at the smaller fraction.
    pub cls_epochs: usize,
    /// Classification epochs per cell with all labels.
    pub cls_epochs_all: usize,
    /// The smaller classification label fraction (the larger is 100 %).
    pub cls_fraction: f64,
    /// Folds of each study.
    pub folds: usize,
    /// Seed of folds, data order, masks and initialisation.
    pub seed: u64,
}

/// One row of the demo's table: an initialisation's mean over folds.
#[derive(Clone, Debug)]
pub struct DemoRow {
    /// `classification` or `segmentation`.
    pub task: String,
    /// Initialisation.
    pub init: String,
    /// Label fraction.
    pub fraction: f64,
    /// Metric (ROC AUC, Dice).
    pub metric: String,
    /// Mean over folds and its sample sd.
    pub mean_sd: (f64, f64),
}

/// What the demo did.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    /// The table.
    pub rows: Vec<DemoRow>,
    /// The verdicts of the paired comparisons, in words.
    pub verdicts: Vec<String>,
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// Seconds spent.
    pub seconds: f64,
}

/// vismae's shipped MAE weights (`weights/vismae-tiny-mae.safetensors`, see `weights/README.md`).
pub const SHIPPED_TINY_MAE: &[u8] = include_bytes!("../../../weights/vismae-tiny-mae.safetensors");

/// What the demo's intervals do not cover (printed and written with its verdicts).
pub const SEEDS_CAVEAT: &str = "Each interval covers the sampling of test cases for these trained models, not the variation between training runs: run the demo again with another --seed before concluding (the README shows three seeds).";

/// The name the demo's tables give the shipped weights.
const SHIPPED_NAME: &str = "VIS-MAE (shipped tiny)";

fn toml_text(v: &toml::Table) -> String {
    toml::to_string(v).unwrap_or_default()
}

/// The study file of one of the demo's studies.
#[allow(clippy::too_many_arguments)]
fn study_file(
    dataset: (&str, &Path, &str),
    weights: &Path,
    fractions: [f64; 2],
    folds: usize,
    seed: u64,
    group_by: &str,
    selection: &str,
    finetune: toml::Table,
    by_fraction: Option<(f64, toml::Table)>,
) -> String {
    let mut t = toml::Table::new();
    t.insert("reference".into(), "scratch".into());
    t.insert("folds".into(), (folds as i64).into());
    t.insert("fractions".into(), toml::Value::Array(fractions.iter().map(|f| (*f).into()).collect()));
    t.insert("seed".into(), (seed as i64).into());
    t.insert("group_by".into(), group_by.into());
    t.insert("selection".into(), selection.into());
    t.insert("resamples".into(), 10_000i64.into());
    t.insert("finetune".into(), toml::Value::Table(finetune));
    if let Some((f, table)) = by_fraction {
        let mut b = toml::Table::new();
        b.insert(fraction_name(f), toml::Value::Table(table));
        t.insert("by_fraction".into(), toml::Value::Table(b));
    }
    let mut d = toml::Table::new();
    d.insert("name".into(), dataset.0.into());
    d.insert("data".into(), dataset.1.display().to_string().into());
    d.insert("task".into(), dataset.2.into());
    t.insert("dataset".into(), toml::Value::Array(vec![toml::Value::Table(d)]));
    let init = |name: &str, w: &str| {
        let mut i = toml::Table::new();
        i.insert("name".into(), name.into());
        i.insert("weights".into(), w.into());
        toml::Value::Table(i)
    };
    t.insert(
        "init".into(),
        toml::Value::Array(vec![init(SHIPPED_NAME, &weights.display().to_string()), init("scratch", "scratch")]),
    );
    toml_text(&t)
}

/// The settings every cell of a study shares: the input the MAE weights were pre-trained on, so
/// that both initialisations see one input and only the start differs.
fn shared(variant: Variant, size: usize, seed: u64, weights: &Path) -> Result<toml::Table> {
    let sd = vismae_model::weights::read_state_dict(weights)
        .map_err(|e| WorkflowError::invalid(format!("{}: {e}", weights.display())))?;
    let card = sd.card().ok_or_else(|| WorkflowError::invalid(format!("{}: no model card", weights.display())))?;
    let mut t = toml::Table::new();
    t.insert("variant".into(), variant.to_string().into());
    t.insert("size".into(), (size as i64).into());
    t.insert("seed".into(), (seed as i64).into());
    let bad = |e: String| WorkflowError::invalid(format!("{}: the card's input: {e}", weights.display()));
    let intensity = serde_json::to_value(&card.preprocess.intensity).map_err(|e| bad(e.to_string()))?;
    let norm = serde_json::to_value(&card.preprocess.norm).map_err(|e| bad(e.to_string()))?;
    t.insert("intensity".into(), toml::Value::try_from(intensity).map_err(|e| bad(e.to_string()))?);
    t.insert("norm".into(), toml::Value::try_from(norm).map_err(|e| bad(e.to_string()))?);
    t.insert("checkpoint_every".into(), 1000i64.into());
    t.insert("keep_checkpoints".into(), 1i64.into());
    Ok(t)
}

/// The means over folds of a study's headline metric per init and fraction (from its table.csv).
fn headline(report: &Path, task: &str, metric: &str) -> Vec<DemoRow> {
    let text = std::fs::read_to_string(report.join("table.csv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // dataset,metric,init,fraction,mean,sd,folds (names may be quoted)
            let f = split_csv(l);
            (f.len() == 7 && f[1] == metric).then(|| DemoRow {
                task: task.into(),
                init: f[2].clone(),
                fraction: f[3].parse().unwrap_or(f64::NAN),
                metric: metric.into(),
                mean_sd: (f[4].parse().unwrap_or(f64::NAN), f[5].parse().unwrap_or(f64::NAN)),
            })
        })
        .collect()
}

fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// The study's report.md without its title, its links pointing into `rel`.
fn embedded(report: &Path, rel: &str) -> String {
    let md = std::fs::read_to_string(report.join("report.md")).unwrap_or_default();
    let body: String = md.lines().skip(1).collect::<Vec<_>>().join("\n");
    body.replace("](figures/", &format!("]({rel}/figures/"))
        .replace("](stats.csv)", &format!("]({rel}/stats.csv)"))
        .replace("](per_case.csv)", &format!("]({rel}/per_case.csv)"))
        .replace("\n## ", "\n### ")
}

/// The `<body>` of a report page.
fn html_body(path: &Path) -> String {
    let html = std::fs::read_to_string(path).unwrap_or_default();
    let start = html.find("<body>").map_or(0, |i| i + 6);
    let end = html.rfind("</body>").unwrap_or(html.len());
    html[start.min(end)..end].replace("<h1>", "<h2>").replace("</h1>", "</h2>")
}

/// Concatenates the CSV files (one header).
fn concat_csv(parts: &[PathBuf], out: &Path) -> Result<()> {
    let mut text = String::new();
    for (i, p) in parts.iter().enumerate() {
        let t = std::fs::read_to_string(p).map_err(WorkflowError::io(p))?;
        let mut lines = t.lines();
        if let Some(head) = lines.next()
            && i == 0
        {
            text.push_str(head);
            text.push('\n');
        }
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
    }
    vismae_run::run_dir::write_atomic(out, text.as_bytes())?;
    Ok(())
}

/// Runs the demo; `say` receives the progress lines; `devices(n)` gives `n` training replicas,
/// `default_devices` is what the build's automatic choice is (and the cells run at once).
pub fn run<B: AutodiffBackend>(
    a: &DemoOptions,
    devices: &dyn Fn(usize) -> Vec<B::Device>,
    default_devices: usize,
    say: &(dyn Fn(String) + Sync),
) -> Result<DemoSummary> {
    let started = Instant::now();
    let root = RunDir::create(&a.out)?;
    let out = std::path::absolute(root.path()).unwrap_or_else(|_| root.path().to_path_buf());
    let sample = a.sample_data.as_deref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    if let Some(s) = &sample
        && !s.join("raw").is_dir()
    {
        say(format!(
            "{} has no raw/ folder: run scripts/fetch-sample-data.sh {} first; using phantoms",
            s.display(),
            s.display()
        ));
    }
    say("[1/5] data".into());
    let sets = crate::sample::build(sample.as_deref(), &out.join("data"), a.size, a.seed)?;
    say(format!("      {}", sets.origin));
    say(format!("      classification: {} ({})", sets.classification_name, sets.classification.display()));

    say(format!(
        "[2/5] a short pre-training run: a {} MAE for {} steps (the pipeline; the studies start from vismae's shipped weights)",
        a.variant, a.pretrain_steps
    ));
    let mut settings = PretrainSettings {
        variant: a.variant,
        steps: Some(a.pretrain_steps),
        batch_size: 8,
        lr: 1e-3,
        min_lr: 1e-5,
        warmup_epochs: Some(0.0),
        seed: a.seed,
        reconstruct_every: 0,
        reconstruct_images: 4,
        checkpoint_every: a.pretrain_steps.max(1),
        // the input of the shipped weights (per-image min-max), so that all of the demo's
        // pre-training and fine-tuning see one input
        norm: vismae_run::InputNorm::MinMax,
        ..PretrainSettings::default()
    };
    // warm up over about the first 15 % of the steps
    let probe = pretrain::resolve(&settings, &sets.pretrain, default_devices)?;
    settings.warmup_epochs = Some(0.15 * a.pretrain_steps as f64 / probe.steps_per_epoch as f64);
    let cfg = pretrain::resolve(&settings, &sets.pretrain, default_devices)?;
    let (mae_dir, pt) = pretrain::start::<B>(&cfg, &out.join("runs/pretrain"), &devices(cfg.devices), false)?;
    say(format!(
        "      {} images; loss {:.4} (first 10 steps) -> {:.4} (last 10) in {:.0} s",
        cfg.images, pt.loss_first_last.0, pt.loss_first_last.1, pt.seconds
    ));
    // the weights both studies start from
    let weights = if a.variant == Variant::Tiny {
        let w = out.join("weights/vismae-tiny-mae.safetensors");
        std::fs::create_dir_all(out.join("weights")).map_err(WorkflowError::io(out.join("weights")))?;
        vismae_run::run_dir::write_atomic(&w, SHIPPED_TINY_MAE)?;
        w
    } else {
        say(format!(
            "      the shipped weights are tiny; the studies start from this run's {} weights instead",
            a.variant
        ));
        mae_dir.join("weights.safetensors")
    };
    let device = devices(1).into_iter().next().ok_or_else(|| WorkflowError::invalid("no device"))?;
    let base = shared(a.variant, a.size, a.seed, &weights)?;

    let run_study = |name: &str, text: String| -> Result<StudySummary> {
        let file = out.join(format!("{name}.toml"));
        vismae_run::run_dir::write_atomic(&file, text.as_bytes())?;
        study::run::<B>(&file, &out.join(name), &device, default_devices, say)
    };
    say(format!(
        "[3/5] classification study on {}: {SHIPPED_NAME} vs scratch, {:.0} % and 100 % of the labels, {} folds",
        sets.classification_name,
        a.cls_fraction * 100.0,
        a.folds
    ));
    let mut cls = base.clone();
    cls.insert("epochs".into(), (a.cls_epochs as i64).into());
    // the last epoch's weights (selection "last"): with a few dozen labels an inner validation
    // split picks an early, undertrained epoch for every start alike. The last epoch needs no
    // per-epoch choice, so the inner split is scored after the last epoch only.
    cls.insert("validate_every".into(), (a.cls_epochs.max(a.cls_epochs_all) as i64).into());
    let mut all = toml::Table::new();
    all.insert("epochs".into(), (a.cls_epochs_all as i64).into());
    let cls_study = run_study(
        "study-cls",
        study_file(
            (&sets.classification_name, &sets.classification, "classification"),
            &weights,
            [a.cls_fraction, 1.0],
            a.folds,
            a.seed,
            "similar",
            "last",
            cls,
            Some((1.0, all)),
        ),
    )?;
    for w in crate::study::results::in_words(&cls_study.stats) {
        say(format!("      {w}"));
    }
    say(format!(
        "[4/5] segmentation study on the labelled set: {SHIPPED_NAME} vs scratch, {:.0} % and 100 % of the labels, {} folds ({} epochs)",
        a.fraction * 100.0,
        a.folds,
        a.epochs
    ));
    let mut seg = base.clone();
    seg.insert("epochs".into(), (a.epochs as i64).into());
    seg.insert("warmup_epochs".into(), (a.epochs as f64 / 10.0).into());
    // quarter turns and flips: the reference's rotations and affines need more epochs than a
    // few-minute demo has
    seg.insert("augment".into(), "flip".into());
    let seg_name = if sets.origin.starts_with("generated") { "phantoms" } else { "Colin27 AAL" };
    let seg_study = run_study(
        "study-seg",
        study_file(
            (seg_name, &sets.labelled, "segmentation"),
            &weights,
            [a.fraction, 1.0],
            a.folds,
            a.seed,
            "patient",
            "inner",
            seg,
            None,
        ),
    )?;
    for w in crate::study::results::in_words(&seg_study.stats) {
        say(format!("      {w}"));
    }
    let failed: Vec<String> =
        cls_study.failed.iter().chain(&seg_study.failed).map(|(c, e)| format!("{c}: {e}")).collect();
    if !failed.is_empty() {
        return Err(WorkflowError::invalid(format!("{} cell(s) failed:\n  {}", failed.len(), failed.join("\n  "))));
    }

    say("[5/5] report".into());
    let report_dir = out.join("report");
    let pre = vismae_report::build(
        &[mae_dir.path().to_path_buf()],
        &report_dir.join("pretraining"),
        "The demo's short pre-training run",
        &[],
    )?;
    concat_csv(&[cls_study.report.join("stats.csv"), seg_study.report.join("stats.csv")], &out.join("stats.csv"))?;
    concat_csv(
        &[cls_study.report.join("per_case.csv"), seg_study.report.join("per_case.csv")],
        &out.join("per_case.csv"),
    )?;
    let mut rows = headline(&cls_study.report, "classification", "ROC AUC");
    rows.extend(headline(&seg_study.report, "segmentation", "Dice"));
    let verdicts: Vec<String> = crate::study::results::in_words(&cls_study.stats)
        .into_iter()
        .chain(crate::study::results::in_words(&seg_study.stats))
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let mut md = format!(
        "# vismae demo\n\nData: {}. Classification: {}. Everything here was made by `vismae demo` in {:.0} s.\n\n",
        sets.origin, sets.classification_name, seconds
    );
    md.push_str("Both studies fine-tune from vismae's shipped `tiny` MAE weights (`weights/README.md`: data, command, steps) and from scratch, on the same folds, with the same settings and the same input (the one the weights were pre-trained on); each cell is tested on its fold's held-out cases. The classification cells keep their last epoch; the segmentation cells the epoch with the best score on an inner validation split.\n\n");
    md.push_str("## What the numbers show\n\n");
    for v in &verdicts {
        let _ = writeln!(md, "- {v}");
    }
    let _ = writeln!(md, "- {SEEDS_CAVEAT}");
    md.push_str("\nThese are short runs of a small model on public sample data: they show what the tool measures and how sure it is, not the paper's numbers. Every test case's value is in [per_case.csv](../per_case.csv) and every comparison in [stats.csv](../stats.csv).\n\n");
    let _ = write!(
        md,
        "## Classification: {}\n{}\n\n",
        sets.classification_name,
        embedded(&cls_study.report, "../study-cls/report")
    );
    let _ = write!(md, "## Segmentation: {seg_name}\n{}\n\n", embedded(&seg_study.report, "../study-seg/report"));
    let _ = write!(
        md,
        "## The short pre-training run\n\n{} steps of a {} MAE on {} images: loss {:.4} -> {:.4}. Curves and reconstructions: [pretraining/report.md](pretraining/report.md).\n",
        a.pretrain_steps, a.variant, cfg.images, pt.loss_first_last.0, pt.loss_first_last.1
    );
    let markdown = report_dir.join("report.md");
    vismae_run::run_dir::write_atomic(&markdown, md.as_bytes())?;
    let verdict_html: String = verdicts
        .iter()
        .chain([&SEEDS_CAVEAT.to_string()])
        .map(|v| format!("<li>{}</li>", vismae_report::html::escape(v)))
        .collect();
    let body = format!(
        "<h1>vismae demo</h1>\n<p>{}</p>\n<h2>What the numbers show</h2>\n<ul>{verdict_html}</ul>\n<h2>Classification: {}</h2>\n{}\n<h2>Segmentation: {}</h2>\n{}\n<h2>The short pre-training run</h2>\n{}",
        vismae_report::html::escape(&sets.origin),
        vismae_report::html::escape(&sets.classification_name),
        html_body(&cls_study.report.join("report.html")),
        vismae_report::html::escape(seg_name),
        html_body(&seg_study.report.join("report.html")),
        html_body(&pre.html)
    );
    let html = report_dir.join("report.html");
    vismae_run::run_dir::write_atomic(&html, vismae_report::html::page("vismae demo", &body).as_bytes())?;
    Ok(DemoSummary { rows, verdicts, markdown, html, seconds: started.elapsed().as_secs_f64() })
}
