//! What used to fall back silently is now an error or a printed note: misspelt choices on the
//! command line and in `--set`, a warm-up not shorter than the run, a derived warm-up, an unknown
//! `reconstruct --norm`, a classification run that does not say whether it is multi-label; and
//! run folders written by vismae 0.1 still read.

use crate::*;

#[test]
fn misspelt_choices_are_errors_that_list_the_choices() {
    let dir = scratch("typos");
    phantom_seg_csv(&dir);
    let e = fails(
        vismae()
            .args(["finetune", "seg", "--variant", "tniy", "--init", "scratch", "--out"])
            .arg(dir.join("r"))
            .arg("--data")
            .arg(dir.join("train.csv")),
    );
    assert!(e.contains("tniy") && e.contains("vis-mae") && e.contains("tiny"), "{e}");
    let e = fails(
        vismae()
            .args(["finetune", "seg", "--set", "variant=\"tniy\"", "--init", "scratch", "--out"])
            .arg(dir.join("r"))
            .arg("--data")
            .arg(dir.join("train.csv")),
    );
    assert!(e.contains("tniy") && e.contains("vis-mae"), "{e}");
    assert!(!dir.join("r").exists(), "nothing is written before the settings resolve");
    let e = fails(
        vismae()
            .args(["pretrain", "--set", "variant=\"huge\"", "--steps", "1", "--data"])
            .arg(dir.join("nope"))
            .arg("--out")
            .arg(dir.join("p")),
    );
    assert!(e.contains("huge") && e.contains("small"), "{e}");
    let e = fails(
        vismae()
            .args(["reconstruct", "--norm", "zscore", "--weights"])
            .arg(fixture("official_checkpoint.pth"))
            .arg(dir.join("img/case0.png"))
            .arg("--out")
            .arg(dir.join("rec")),
    );
    assert!(e.contains("zscore") && e.contains("meanstd") && e.contains("minmax"), "{e}");
    let e = fails(vismae().args(["bench", "unets"]));
    assert!(e.contains("pretrain") && e.contains("unet"), "{e}");
    let e = fails(
        vismae()
            .args(["split", "--group-by", "subject", "--out"])
            .arg(dir.join("s.json"))
            .arg("--data")
            .arg(dir.join("train.csv")),
    );
    assert!(e.contains("patient") && e.contains("case"), "{e}");
}

#[test]
fn warm_up_too_long_is_refused_and_a_derived_one_is_said() {
    let dir = scratch("warm");
    phantom_seg_csv(&dir);
    let args = |out: &str| {
        let mut c = vismae();
        c.args([
            "finetune",
            "seg",
            "--variant",
            "tiny",
            "--set",
            "size=32",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--init",
            "scratch",
        ])
        .arg("--data")
        .arg(dir.join("train.csv"))
        .arg("--out")
        .arg(dir.join(out));
        c
    };
    let e = fails(args("long").args(["--set", "warmup_epochs=40"]));
    assert!(e.contains("not shorter than the run (2 epochs)"), "{e}");
    assert!(!dir.join("long").exists());
    let text = ok(&mut args("derived"));
    assert!(text.contains("note: warm-up: 0.53 epochs"), "{text}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("derived/config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert!((cfg["warmup_epochs"].as_f64().unwrap_or(0.0) - 2.0 * 40.0 / 150.0).abs() < 1e-12, "{cfg}");
    assert_eq!(cfg["schema"], 2);
}

/// A config.json written as vismae 0.1 wrote it (no schema, preprocessing or derived fields).
fn as_version_0_1(run: &std::path::Path) {
    let path = run.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default()).unwrap_or_default();
    for k in
        ["schema", "vismae", "init_name", "multi_label", "preprocess", "encoder_preprocess", "warmup_epochs", "devices"]
    {
        v.as_object_mut().map(|o| o.remove(k));
    }
    for k in ["channels", "intensity", "norm", "min_lr", "betas", "devices"] {
        v["settings"].as_object_mut().map(|o| o.remove(k));
    }
    std::fs::write(&path, v.to_string()).unwrap_or_default();
}

#[test]
fn old_run_folders_read_and_an_unknown_multi_label_is_an_error() {
    let dir = scratch("old");
    for (class, seed) in [("a", 1u64), ("b", 2)] {
        std::fs::create_dir_all(dir.join(format!("set/{class}"))).unwrap_or_default();
        for i in 0..6u64 {
            let p = vismae_train::phantom::phantom(seed, i, 32);
            let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
            image::GrayImage::from_raw(32, 32, img).map(|g| g.save(dir.join(format!("set/{class}/{i}.png"))));
        }
    }
    ok(vismae()
        .args([
            "finetune",
            "cls",
            "--variant",
            "tiny",
            "--set",
            "size=32",
            "--epochs",
            "1",
            "--folds",
            "3",
            "--init",
            "scratch",
        ])
        .arg("--data")
        .arg(dir.join("set"))
        .arg("--out")
        .arg(dir.join("run")));
    as_version_0_1(&dir.join("run"));
    // a 0.1 folder still predicts (multi-label is in its summary.json, as 0.1 kept it)
    ok(vismae()
        .args(["predict", "--model"])
        .arg(dir.join("run"))
        .arg("--data")
        .arg(dir.join("set"))
        .arg("--out")
        .arg(dir.join("p1")));
    // without its summary it cannot tell whether it is multi-label: an error, not single-label
    std::fs::remove_file(dir.join("run/summary.json")).unwrap_or_default();
    let e = fails(
        vismae()
            .args(["predict", "--model"])
            .arg(dir.join("run"))
            .arg("--data")
            .arg(dir.join("set"))
            .arg("--out")
            .arg(dir.join("p2")),
    );
    assert!(e.contains("multi-label"), "{e}");
    // a folder from a newer vismae names the version that wrote it
    let path = dir.join("run/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default()).unwrap_or_default();
    v["schema"] = serde_json::json!(7);
    v["vismae"] = serde_json::json!("3.1.0");
    std::fs::write(&path, v.to_string()).unwrap_or_default();
    let e = fails(
        vismae()
            .args(["predict", "--model"])
            .arg(dir.join("run"))
            .arg("--data")
            .arg(dir.join("set"))
            .arg("--out")
            .arg(dir.join("p3")),
    );
    assert!(e.contains("vismae 3.1.0") && e.contains("schema 7"), "{e}");
}
