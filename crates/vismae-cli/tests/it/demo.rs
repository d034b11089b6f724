//! The demo end to end (on the sample data when CI fetched it), and its refusal to overwrite.

use std::path::PathBuf;

use crate::*;

#[test]
fn demo_runs_end_to_end_and_never_overwrites() {
    let out = scratch("demo");
    let mut cmd = vismae();
    cmd.args(["demo", "--pretrain-steps", "4", "--epochs", "1", "--size", "32", "--out"]).arg(&out);
    // with the sample data when CI fetched it (Colin27 + AAL), else phantoms
    if let Some(d) = std::env::var_os("VISMAE_SAMPLE_DATA").map(PathBuf::from).filter(|d| d.join("raw").is_dir()) {
        cmd.arg("--sample-data").arg(d);
    }
    let text = ok(&mut cmd);
    assert!(text.contains("test Dice") && text.contains("report:"), "{text}");
    for f in [
        "runs/pretrain/weights.safetensors",
        "runs/seg-vis-mae-100pct/test/summary.json",
        "runs/seg-scratch-25pct/best.safetensors",
        "report/report.md",
        "report/report.html",
        "report/table.csv",
        "report/figures/curves-pretraining-0-pretrain-set.png",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap_or_default();
    assert!(md.contains("| VIS-MAE-Generic |") && md.contains("| scratch |") && md.contains("overlay.png"), "{md}");
    // `vismae report` gives the same tables from the run folders
    let runs: Vec<PathBuf> =
        ["pretrain", "seg-vis-mae-25pct", "seg-vis-mae-100pct", "seg-scratch-25pct", "seg-scratch-100pct"]
            .iter()
            .map(|r| out.join("runs").join(r))
            .collect();
    let text = ok(vismae().arg("report").args(&runs).arg("--out").arg(out.join("report2")));
    assert!(text.contains("2 tables"), "{text}");
    let t1 = std::fs::read_to_string(out.join("report/table.csv")).unwrap_or_default();
    let t2 = std::fs::read_to_string(out.join("report2/table.csv")).unwrap_or_default();
    assert_eq!(t1, t2);
    let again =
        vismae().args(["demo", "--pretrain-steps", "1", "--out"]).arg(&out).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
}
