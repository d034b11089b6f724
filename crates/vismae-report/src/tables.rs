//! The paper-shaped tables: rows = initialisations (VIS-MAE weights first, other weights, scratch
//! last), columns = dataset x metric, cells = mean ± sample sd over folds, one table per label
//! fraction; as Markdown, and every number in a CSV.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::runs::{Run, RunKind, mean_sd};

pub(crate) fn slug(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-")
}

pub(crate) fn cell(values: &[f64]) -> String {
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

pub(crate) type Key = (String, String); // (dataset, metric)

/// Fine-tuning results: (dataset, metric) -> init -> fraction (per mille) -> values over folds.
pub(crate) type Results = BTreeMap<Key, BTreeMap<(u8, String), BTreeMap<u64, Vec<f64>>>>;

pub(crate) fn collect(runs: &[Run]) -> Results {
    let mut r = Results::new();
    for run in runs.iter().filter(|r| r.kind != RunKind::Pretraining) {
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

pub(crate) fn tables(results: &Results) -> (Vec<(u64, String)>, String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_mean_sd_and_count() {
        assert_eq!(cell(&[0.5, 0.7]), "0.6000 ± 0.1414 (n=2)");
        assert_eq!(cell(&[0.5, f64::NAN]), "0.5000");
        assert_eq!(cell(&[]), "–");
        assert_eq!(slug("Dice (validation)"), "dice-validation");
    }
}
