//! vismae-report: from finished runs to what a paper or a lab meeting needs. Tables in the
//! paper's shape (rows = initialisations, columns = datasets x metrics, mean ± sd over folds, one
//! table per label fraction) as Markdown and CSV; label-efficiency figures and training curves as
//! PNG and SVG; and `report.md` plus a self-contained `report.html` (figures inlined) linking
//! them all. No burn: it reads `config.json`, `metrics.jsonl` and summaries.

pub mod plot;
pub mod runs;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use runs::{Run, mean_sd, read_run};

/// An image to show in the report besides the figures (reconstructions, overlays).
#[derive(Clone, Debug)]
pub struct Extra {
    /// Section it goes in.
    pub section: String,
    /// Caption.
    pub caption: String,
    /// The PNG file (copied into the report folder).
    pub path: PathBuf,
}

/// What `build` wrote.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
    /// Figures (SVG and PNG).
    pub figures: Vec<PathBuf>,
    /// The tables in Markdown, one per label fraction.
    pub tables: Vec<String>,
}

fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

fn cell(values: &[f64]) -> String {
    let (m, sd, n) = mean_sd(values);
    match n {
        0 => "–".into(),
        1 => format!("{m:.4}"),
        _ => format!("{m:.4} ± {sd:.4} (n={n})"),
    }
}

/// Initialisations in table order: VIS-MAE weights first, other weights, scratch last.
fn init_order(a: &str) -> (u8, String) {
    let rank = if a.starts_with("VIS-MAE") {
        0
    } else if a == "scratch" {
        2
    } else {
        1
    };
    (rank, a.to_string())
}

type Key = (String, String); // (dataset, metric)

/// Fine-tuning results: (dataset, metric) -> init -> fraction (per mille) -> values over folds.
type Results = BTreeMap<Key, BTreeMap<(u8, String), BTreeMap<u64, Vec<f64>>>>;

fn collect(runs: &[Run]) -> Results {
    let mut r = Results::new();
    for run in runs.iter().filter(|r| r.task != "pretraining") {
        for (metric, v) in &run.metrics {
            let metric = if run.source == "test" { metric.clone() } else { format!("{metric} ({})", run.source) };
            r.entry((run.dataset.clone(), metric))
                .or_default()
                .entry(init_order(&run.init))
                .or_default()
                .entry((run.fraction * 1000.0).round() as u64)
                .or_default()
                .push(*v);
        }
    }
    r
}

fn tables(results: &Results) -> (Vec<(u64, String)>, String) {
    let fractions: BTreeSet<u64> = results.values().flat_map(|m| m.values().flat_map(|f| f.keys().copied())).collect();
    let inits: BTreeSet<(u8, String)> = results.values().flat_map(|m| m.keys().cloned()).collect();
    let mut csv = String::from("dataset,metric,init,label_fraction,mean,sd,n\n");
    for ((dataset, metric), by_init) in results {
        for ((_, init), by_frac) in by_init {
            for (f, v) in by_frac {
                let (m, sd, n) = mean_sd(v);
                let fmt = |x: f64| if x.is_finite() { format!("{x}") } else { String::new() };
                let _ = writeln!(csv, "{dataset},{metric},{init},{},{},{},{n}", *f as f64 / 1000.0, fmt(m), fmt(sd));
            }
        }
    }
    let mut out = Vec::new();
    for f in fractions.iter().rev() {
        let mut t = format!(
            "| initialisation | {} |\n|---|",
            results.keys().map(|(d, m)| format!("{d}: {m}")).collect::<Vec<_>>().join(" | ")
        );
        t.push_str(&"---|".repeat(results.len()));
        t.push('\n');
        for init in &inits {
            let row: Vec<String> = results
                .values()
                .map(|m| m.get(init).and_then(|by_frac| by_frac.get(f)).map(|v| cell(v)).unwrap_or_else(|| "–".into()))
                .collect();
            let _ = writeln!(t, "| {} | {} |", init.1, row.join(" | "));
        }
        out.push((*f, t));
    }
    (out, csv)
}

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

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Markdown table to HTML.
fn md_table_html(t: &str) -> String {
    let mut h = String::from("<table>\n");
    for (i, line) in t.lines().enumerate().filter(|(i, _)| *i != 1) {
        let tag = if i == 0 { "th" } else { "td" };
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        let _ = writeln!(
            h,
            "<tr>{}</tr>",
            cells.iter().map(|c| format!("<{tag}>{}</{tag}>", escape(c))).collect::<String>()
        );
    }
    h.push_str("</table>\n");
    h
}

/// Reads `run_dirs` and writes the report into `out` (new or empty), with `extras` shown too.
pub fn build(run_dirs: &[PathBuf], out: &Path, title: &str, extras: &[Extra]) -> Result<Report, String> {
    if out.exists() && std::fs::read_dir(out).map_err(|e| format!("{}: {e}", out.display()))?.next().is_some() {
        return Err(format!(
            "{} already exists and is not empty (vismae never overwrites an earlier report)",
            out.display()
        ));
    }
    let runs: Vec<Run> = run_dirs.iter().map(|d| read_run(d)).collect::<Result<_, _>>()?;
    if runs.is_empty() {
        return Err("no runs given".into());
    }
    let figdir = out.join("figures");
    std::fs::create_dir_all(&figdir).map_err(|e| format!("{}: {e}", figdir.display()))?;
    let mut report = Report::default();
    let mut md = format!("# {title}\n\n");
    let mut html_body = format!("<h1>{}</h1>\n", escape(title));
    let results = collect(&runs);
    // tables
    if !results.is_empty() {
        let (tabs, csv) = tables(&results);
        let csv_path = out.join("table.csv");
        std::fs::write(&csv_path, csv).map_err(|e| format!("{}: {e}", csv_path.display()))?;
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
    let mut add_figure = |svg: &Path, png: &Path, caption: &str| -> Result<(), String> {
        let rel = |p: &Path| p.strip_prefix(out).unwrap_or(p).display().to_string();
        let _ = write!(figures_md, "![{caption}]({})\n\n*{caption}* ([SVG]({}))\n\n", rel(png), rel(svg));
        let svg_text = std::fs::read_to_string(svg).map_err(|e| format!("{}: {e}", svg.display()))?;
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
    let datasets: BTreeSet<(String, String)> =
        runs.iter().filter(|r| r.task != "pretraining").map(|r| (r.dataset.clone(), r.task.clone())).collect();
    for (dataset, task) in &datasets {
        let group: Vec<&Run> = runs.iter().filter(|r| &r.dataset == dataset && &r.task == task).collect();
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
    for (i, r) in runs.iter().enumerate().filter(|(_, r)| r.task == "pretraining") {
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
        .filter(|r| r.task == "pretraining")
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
        std::fs::create_dir_all(&imgdir).map_err(|e| format!("{}: {e}", imgdir.display()))?;
        let mut section = String::new();
        for (k, e) in images.iter().enumerate() {
            if e.section != section {
                section = e.section.clone();
                let _ = write!(md, "## {section}\n\n");
                let _ = writeln!(html_body, "<h2>{}</h2>", escape(&section));
            }
            let name =
                format!("{k:02}-{}", e.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            let bytes = std::fs::read(&e.path).map_err(|err| format!("{}: {err}", e.path.display()))?;
            std::fs::write(imgdir.join(&name), &bytes)
                .map_err(|err| format!("{}: {err}", imgdir.join(&name).display()))?;
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
            r.task.clone(),
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
    std::fs::write(&report.markdown, md).map_err(|e| format!("{}: {e}", report.markdown.display()))?;
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left}}figure{{margin:1.5em 0}}svg,img{{max-width:100%;height:auto}}figcaption{{font-style:italic;color:#444}}</style></head><body>\n{html_body}</body></html>\n",
        escape(title)
    );
    report.html = out.join("report.html");
    std::fs::write(&report.html, html).map_err(|e| format!("{}: {e}", report.html.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn cells_show_mean_sd_and_count() {
        assert_eq!(cell(&[0.5, 0.7]), "0.6000 ± 0.1414 (n=2)");
        assert_eq!(cell(&[0.5, f64::NAN]), "0.5000");
        assert_eq!(cell(&[]), "–");
        assert_eq!(slug("Dice (validation)"), "dice-validation");
    }
}
