//! Evaluation against sklearn values, per-case segmentation scores with NaN as null, grouped splits.

use crate::*;

#[test]
fn evaluate_cls_writes_sklearn_values() {
    let dir = scratch("eval-cls");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    // the multi-class case of vismae-metrics' tests; sklearn: macro AUC 0.7767857142857143, weighted AP 0.6875
    let rows = [
        (0, [0.5, 0.3, 0.2]),
        (1, [0.4, 0.4, 0.2]),
        (2, [0.3, 0.3, 0.4]),
        (2, [0.2, 0.5, 0.3]),
        (1, [0.3, 0.4, 0.3]),
        (0, [0.2, 0.3, 0.5]),
        (2, [0.3, 0.3, 0.4]),
        (1, [0.5, 0.3, 0.2]),
        (0, [0.6, 0.2, 0.2]),
        (2, [0.1, 0.2, 0.7]),
    ];
    let mut csv = String::from("id,label,prob_0,prob_1,prob_2\n");
    for (i, (l, p)) in rows.iter().enumerate() {
        csv.push_str(&format!("case{i},{l},{},{},{}\n", p[0], p[1], p[2]));
    }
    std::fs::write(dir.join("results.csv"), csv).unwrap_or_default();
    ok(vismae().args(["evaluate", "cls", "--results"]).arg(dir.join("results.csv")).arg("--out").arg(dir.join("out")));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/summary.json")).unwrap_or_default())
            .unwrap_or_default();
    assert!((s["roc_auc"]["macro"].as_f64().unwrap_or(0.0) - 0.7767857142857143).abs() < 1e-12, "{s}");
    assert!((s["average_precision"]["weighted"].as_f64().unwrap_or(0.0) - 0.6875).abs() < 1e-12, "{s}");
    assert_eq!(s["roc_auc"]["per_class"].as_array().map(Vec::len), Some(3));
    // binary: class 1 is the positive class; a single-class column gives null
    std::fs::write(dir.join("bin.csv"), "id,label,prob_0,prob_1\na,1,0.2,0.8\nb,1,0.4,0.6\n").unwrap_or_default();
    ok(vismae().args(["evaluate", "cls", "--results"]).arg(dir.join("bin.csv")).arg("--out").arg(dir.join("bin")));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bin/summary.json")).unwrap_or_default())
            .unwrap_or_default();
    assert!(s["roc_auc"]["per_class"][0].is_null() && s["roc_auc"]["macro"].is_null(), "{s}");
}

#[test]
fn evaluate_seg_per_case_and_mean_with_nan_as_null() {
    let dir = scratch("eval-seg");
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["pred", "gt"] {
        std::fs::create_dir_all(dir.join(d)).unwrap_or_default();
    }
    let save = |p: std::path::PathBuf, v: Vec<u8>| {
        image::GrayImage::from_raw(4, 1, v)
            .map(|i| i.save(&p))
            .unwrap_or_else(|| panic!("buffer"))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    save(dir.join("gt/a.png"), vec![1, 0, 1, 0]);
    save(dir.join("pred/a.png"), vec![1, 1, 0, 0]);
    save(dir.join("gt/b.png"), vec![2, 2, 0, 0]);
    save(dir.join("pred/b.png"), vec![2, 2, 0, 0]);
    ok(vismae()
        .args(["evaluate", "seg", "--pred"])
        .arg(dir.join("pred"))
        .arg("--gt")
        .arg(dir.join("gt"))
        .arg("--out")
        .arg(dir.join("out")));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/summary.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(s["per_case"]["a.png"]["1"]["dice"].as_f64(), Some(0.5));
    assert!(s["per_case"]["a.png"]["2"]["dice"].is_null(), "class 2 is absent from case a: {s}");
    assert_eq!(s["mean"]["2"]["dice"].as_f64(), Some(1.0));
    assert_eq!(s["foreground_mean"]["dice"].as_f64(), Some(0.75));
    assert!(std::fs::read_to_string(dir.join("out/metrics.csv")).unwrap_or_default().contains("a.png,1,0.500000"));
    // different sizes name the case
    image::GrayImage::from_raw(2, 1, vec![0, 1]).map(|i| i.save(dir.join("pred/b.png")));
    let o = vismae()
        .args(["evaluate", "seg", "--pred"])
        .arg(dir.join("pred"))
        .arg("--gt")
        .arg(dir.join("gt"))
        .arg("--out")
        .arg(dir.join("out2"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("case b.png") && err.contains("2x1x1") && err.contains("4x1x1"),
        "{err}"
    );
}

#[test]
fn split_keeps_patients_together_in_nnunet_layout() {
    let dir = scratch("split");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_default();
    let mut csv = String::from("image,label,patient_id\n");
    for i in 0..40 {
        csv.push_str(&format!("img{i}.png,{},P{}\n", i % 2, i / 2));
    }
    std::fs::write(dir.join("cls.csv"), csv).unwrap_or_default();
    let out = dir.join("splits.json");
    ok(vismae()
        .args(["split", "--folds", "5", "--seed", "1", "--data"])
        .arg(dir.join("cls.csv"))
        .arg("--out")
        .arg(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default()).unwrap_or_default();
    let folds = v.as_array().cloned().unwrap_or_default();
    assert_eq!(folds.len(), 5);
    for f in &folds {
        let ids = |k: &str| {
            f[k].as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let patient = |c: &String| c.trim_start_matches("img").parse::<usize>().unwrap_or(0) / 2;
        let val_patients: std::collections::HashSet<usize> = ids("val").iter().map(patient).collect();
        assert!(ids("train").iter().all(|c| !val_patients.contains(&patient(c))));
        assert_eq!(ids("train").len() + ids("val").len(), 40);
        assert!(f["fractions"]["0.05"].as_array().is_some_and(|a| !a.is_empty()));
    }
    let again = vismae()
        .args(["split", "--data"])
        .arg(dir.join("cls.csv"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!again.status.success());
}
