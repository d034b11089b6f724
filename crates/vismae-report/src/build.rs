//! `build`: the report folder from run folders: tables, label-efficiency figures, training
//! curves, reconstructions and extra images, `report.md` and `report.html`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::ReportError;
use crate::html::{base64, escape, md_table_html, page};
use crate::runs::{Run, RunKind, mean_sd, read_run};
use crate::tables::{collect, slug, tables};
use crate::{Extra, Report, plot};

/// The field logged for a run's validation metric, and its axis name.
fn val_field(run: &Run) -> Option<(&'static str, &'static str)> {
    let first = run.curve.first()?;
    [("val_dice", "validation Dice"), ("val_auc_macro", "validation ROC AUC"), ("val_loss", "validation loss")]
        .into_iter()
        .find(|(k, _)| first.get(*k).is_some())
}

fn curve_line(run: &Run, x_key: &str, y_key: &str, label: String, log: bool) -> plot::Line {
    let pts = run
        .curve
        .iter()
        .filter_map(|v| {
            let (x, y) = (v[x_key].as_f64()?, v[y_key].as_f64()?);
            let y = if log { y.max(1e-12).log10() } else { y };
            Some((x, y, f64::NAN))
        })
        .collect();
    (label, pts)
}

fn run_label(run: &Run) -> String {
    format!("{} {:.0}% fold {}", run.init, run.fraction * 100.0, run.fold)
}

/// Reads `run_dirs` and writes the report into `out` (new or empty), with `extras` shown too.
pub fn build(run_dirs: &[PathBuf], out: &Path, title: &str, extras: &[Extra]) -> Result<Report, ReportError> {
    if out.exists() && std::fs::read_dir(out).map_err(ReportError::at(out))?.next().is_some() {
        return Err(ReportError::Occupied(out.into()));
    }
    let runs: Vec<Run> = run_dirs.iter().map(|d| read_run(d)).collect::<Result<_, _>>()?;
    if runs.is_empty() {
        return Err(ReportError::NoRuns);
    }
    let figdir = out.join("figures");
    std::fs::create_dir_all(&figdir).map_err(ReportError::at(&figdir))?;
    let mut report = Report::default();
    let mut md = format!("# {title}\n\n");
    let mut html_body = format!("<h1>{}</h1>\n", escape(title));
    let results = collect(&runs);
    // tables
    if !results.is_empty() {
        let (tabs, csv) = tables(&results);
        let csv_path = out.join("table.csv");
        vismae_run::run_dir::write_atomic(&csv_path, csv.as_bytes())?;
        md.push_str("## Results\n\nMean ± sample sd over folds (n = folds); metrics on held-out test cases unless marked `(validation)`. All numbers also in [table.csv](table.csv).\n\n");
        html_body.push_str("<h2>Results</h2>\n<p>Mean ± sample sd over folds (n = folds); metrics on held-out test cases unless marked (validation).</p>\n");
        for (f, t) in &tabs {
            let head = format!("{:.0} % of the training labels", *f as f64 / 10.0);
            let _ = write!(md, "### {head}\n\n{t}\n");
            let _ = write!(html_body, "<h3>{head}</h3>\n{}", md_table_html(t));
            report.tables.push(t.clone());
        }
    }
    let mut figures_md = String::new();
    let mut figures_html = String::new();
    let mut add_figure = |svg: &Path, png: &Path, caption: &str| -> Result<(), ReportError> {
        let rel = |p: &Path| p.strip_prefix(out).unwrap_or(p).display().to_string();
        let _ = write!(figures_md, "![{caption}]({})\n\n*{caption}* ([SVG]({}))\n\n", rel(png), rel(svg));
        let svg_text = std::fs::read_to_string(svg).map_err(ReportError::at(&svg))?;
        let _ = writeln!(figures_html, "<figure>{svg_text}<figcaption>{}</figcaption></figure>", escape(caption));
        report.figures.push(svg.into());
        report.figures.push(png.into());
        Ok(())
    };
    // label efficiency
    for ((dataset, metric), by_init) in &results {
        let lines: Vec<plot::Line> = by_init
            .iter()
            .map(|((_, init), by_frac)| {
                let pts = by_frac
                    .iter()
                    .map(|(f, v)| {
                        let (m, sd, _) = mean_sd(v);
                        (*f as f64 / 10.0, m, sd)
                    })
                    .collect();
                (init.clone(), pts)
            })
            .collect();
        let stem = figdir.join(format!("label-efficiency-{}-{}", slug(dataset), slug(metric)));
        let panels = [(format!("{dataset}: {metric} vs labels used"), metric.clone(), lines)];
        let (svg, png) = plot::figure(&stem, &panels, "% of training labels", true)?;
        add_figure(&svg, &png, &format!("Label efficiency on {dataset}: {metric} (error bars: sd over folds)"))?;
    }
    // training curves: fine-tuning per dataset, pre-training per run
    let datasets: BTreeSet<(String, String)> = runs
        .iter()
        .filter(|r| r.kind != RunKind::Pretraining)
        .map(|r| (r.dataset.clone(), r.task().to_string()))
        .collect();
    for (dataset, task) in &datasets {
        let group: Vec<&Run> = runs.iter().filter(|r| &r.dataset == dataset && r.task() == task).collect();
        let loss = group.iter().map(|r| curve_line(r, "epoch", "loss", run_label(r), false)).collect();
        let lr = group.iter().map(|r| curve_line(r, "epoch", "lr", run_label(r), false)).collect();
        let mut panels = vec![(format!("{dataset}: training loss"), "loss".to_string(), loss)];
        if let Some((key, name)) = group.first().and_then(|r| val_field(r)) {
            let v = group.iter().map(|r| curve_line(r, "epoch", key, run_label(r), false)).collect();
            panels.push((format!("{dataset}: {name}"), name.to_string(), v));
        }
        panels.push((format!("{dataset}: learning rate"), "learning rate".to_string(), lr));
        let stem = figdir.join(format!("curves-{}-{}", slug(task), slug(dataset)));
        let (svg, png) = plot::figure(&stem, &panels, "epoch", false)?;
        add_figure(
            &svg,
            &png,
            &format!("Fine-tuning on {dataset} ({task}): loss, validation metric and learning rate per epoch"),
        )?;
    }
    for (i, r) in runs.iter().enumerate().filter(|(_, r)| r.kind == RunKind::Pretraining) {
        let label = format!("{} on {}", r.init, r.dataset);
        let panels = [
            (
                format!("pre-training {label}: MAE loss"),
                "loss (log scale)".to_string(),
                vec![curve_line(r, "step", "loss", label.clone(), true)],
            ),
            (
                format!("pre-training {label}: learning rate"),
                "learning rate".to_string(),
                vec![curve_line(r, "step", "lr", label.clone(), false)],
            ),
        ];
        let stem = figdir.join(format!("curves-pretraining-{i}-{}", slug(&r.dataset)));
        let (svg, png) = plot::figure(&stem, &panels, "optimizer step", false)?;
        add_figure(&svg, &png, &format!("Pre-training {label}: loss and learning rate per step"))?;
    }
    md.push_str("## Figures\n\n");
    md.push_str(&figures_md);
    html_body.push_str("<h2>Figures</h2>\n");
    html_body.push_str(&figures_html);
    // images: reconstructions of pre-training runs, then the extras
    let mut images: Vec<Extra> = runs
        .iter()
        .filter(|r| r.kind == RunKind::Pretraining)
        .filter_map(|r| r.images.last().map(|p| (r, p)))
        .map(|(r, p)| Extra {
            section: "Reconstructions".into(),
            caption: format!(
                "{} on {}: original | masked | reconstruction | visible patches pasted back",
                r.init, r.dataset
            ),
            path: p.clone(),
        })
        .collect();
    images.extend(extras.iter().cloned());
    if !images.is_empty() {
        let imgdir = out.join("images");
        std::fs::create_dir_all(&imgdir).map_err(ReportError::at(&imgdir))?;
        let mut section = String::new();
        for (k, e) in images.iter().enumerate() {
            if e.section != section {
                section = e.section.clone();
                let _ = write!(md, "## {section}\n\n");
                let _ = writeln!(html_body, "<h2>{}</h2>", escape(&section));
            }
            let name =
                format!("{k:02}-{}", e.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let bytes = std::fs::read(&e.path).map_err(ReportError::at(&e.path))?;
            vismae_run::run_dir::write_atomic(&imgdir.join(&name), &bytes)?;
            let _ = write!(md, "![{0}](images/{name})\n\n*{0}*\n\n", e.caption);
            let _ = writeln!(
                html_body,
                "<figure><img src=\"data:image/png;base64,{}\" alt=\"{1}\"><figcaption>{1}</figcaption></figure>",
                base64(&bytes),
                escape(&e.caption)
            );
        }
    }
    // the runs
    md.push_str("## Runs\n\n| run | task | initialisation | dataset | fold | labels | metrics |\n|---|---|---|---|---|---|---|\n");
    html_body.push_str("<h2>Runs</h2>\n<table><tr><th>run</th><th>task</th><th>initialisation</th><th>dataset</th><th>fold</th><th>labels</th><th>metrics</th></tr>\n");
    for r in &runs {
        let m: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        let cells = [
            r.path.display().to_string(),
            r.task().to_string(),
            r.init.clone(),
            r.dataset.clone(),
            r.fold.to_string(),
            format!("{:.0} %", r.fraction * 100.0),
            format!("{} ({})", m.join(", "), r.source),
        ];
        let _ = writeln!(md, "| {} |", cells.join(" | "));
        let _ = writeln!(
            html_body,
            "<tr>{}</tr>",
            cells.iter().map(|c| format!("<td>{}</td>", escape(c))).collect::<String>()
        );
    }
    html_body.push_str("</table>\n");
    report.markdown = out.join("report.md");
    vismae_run::run_dir::write_atomic(&report.markdown, md.as_bytes())?;
    let html = page(title, &html_body);
    report.html = out.join("report.html");
    vismae_run::run_dir::write_atomic(&report.html, html.as_bytes())?;
    Ok(report)
}
