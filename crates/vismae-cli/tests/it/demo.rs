//! The demo end to end (on the sample data when CI fetched it), and its refusal to overwrite.

use std::path::PathBuf;

use crate::*;

#[test]
fn demo_runs_end_to_end_and_never_overwrites() {
    let out = scratch("demo");
    let mut cmd = vismae();
    cmd.args(["demo", "--pretrain-steps", "4", "--epochs", "1", "--cls-epochs", "1", "--cls-epochs-all", "1"])
        .args(["--folds", "2", "--size", "32", "--out"])
        .arg(&out);
    // with the sample data when CI fetched it (Colin27 + AAL), else phantoms
    if let Some(d) = std::env::var_os("VISMAE_SAMPLE_DATA").map(PathBuf::from).filter(|d| d.join("raw").is_dir()) {
        cmd.arg("--sample-data").arg(d);
    }
    let text = ok(&mut cmd);
    assert!(text.contains("what the numbers show:") && text.contains("report:"), "{text}");
    for f in [
        "runs/pretrain/weights.safetensors",
        "weights/vismae-tiny-mae.safetensors",
        "study-cls/report/stats.csv",
        "study-seg/report/per_case.csv",
        "study-seg/cells",
        "stats.csv",
        "per_case.csv",
        "report/report.md",
        "report/report.html",
        "report/pretraining/report.md",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    // the demo's stats.csv holds both studies' comparisons: 2 fractions x (2 + 3 metrics)
    let stats = std::fs::read_to_string(out.join("stats.csv")).unwrap_or_default();
    assert_eq!(stats.lines().count(), 1 + 2 * 2 + 2 * 3, "{stats}");
    assert!(stats.lines().skip(1).all(|l| l.contains(",VIS-MAE (shipped tiny),scratch,")), "{stats}");
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap_or_default();
    assert!(md.contains("## What the numbers show") && md.contains("| scratch |"), "{md}");
    // `vismae report` of a study folder gives its statistics again
    ok(vismae().arg("report").arg(out.join("study-cls")).arg("--out").arg(out.join("report2")));
    let s1 = std::fs::read_to_string(out.join("study-cls/report/stats.csv")).unwrap_or_default();
    let s2 = std::fs::read_to_string(out.join("report2/stats.csv")).unwrap_or_default();
    assert_eq!(s1, s2);
    let again =
        vismae().args(["demo", "--pretrain-steps", "1", "--out"]).arg(&out).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
