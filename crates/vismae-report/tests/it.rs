//! `vismae_report::build` on run folders written here in the layout vismae's runs have: the table
//! values against hand-computed means and sds, the figures' files, text and pixels, the report
//! files, and the refusal to overwrite.

use std::path::{Path, PathBuf};

use serde_json::json;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vismae-report-it-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

/// A fine-tuning run folder with a held-out evaluation giving foreground Dice `dice`.
fn seg_run(root: &Path, init: &str, fraction: f64, fold: usize, dice: f64) -> PathBuf {
    let dir = root.join(format!("ft-{}-{fraction}-{fold}", init.replace('/', "_")));
    let cfg = json!({"task": "segmentation", "data": "/data/Dataset501_Colin", "init": init, "fold": fold, "fraction": fraction,
        "train_cases": [], "val_cases": [], "settings": {}});
    write(&dir.join("config.json"), &cfg.to_string());
    let lines: String = (1..=5)
        .map(|e| {
            format!("{}\n", json!({"epoch": e, "loss": 1.0 / e as f64, "lr": 1e-3, "val_dice": dice * e as f64 / 5.0}))
        })
        .collect();
    write(&dir.join("metrics.jsonl"), &lines);
    write(&dir.join("summary.json"), &json!({"best_val_dice": dice}).to_string());
    let test =
        json!({"foreground_mean": {"dice": dice}, "mean": {"1": {"dice": dice, "precision": 0.5, "recall": 0.25}}});
    write(&dir.join("test/summary.json"), &test.to_string());
    dir
}

#[test]
fn tables_figures_and_report_from_runs() {
    let root = scratch("runs");
    // a pre-training run (its weights are the fine-tuning runs' initialisation)
    let mae = root.join("mae");
    write(
        &mae.join("config.json"),
        &json!({"total_steps": 4, "data": "/data/sample-pretrain", "settings": {"modalities": []}, "images": 8, "size": 64,
            "effective_batch": 2, "steps_per_epoch": 4, "warmup_steps": 0})
        .to_string(),
    );
    let steps: String =
        (1..=4).map(|s| format!("{}\n", json!({"step": s, "loss": 1.0 / s as f64, "lr": 1e-4}))).collect();
    write(&mae.join("metrics.jsonl"), &steps);
    let weights = mae.join("weights.safetensors");
    write(&weights, "");
    let png = root.join("overlay.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10])).save(&png).unwrap_or_else(|e| panic!("{e}"));
    let mut runs = vec![mae.clone()];
    // VIS-MAE: 0.6 / 0.8 at 10 %, 0.8 / 0.9 at 100 %; scratch: 0.4 / 0.5 and 0.7 / 0.8
    for (init, vals) in
        [(weights.display().to_string(), [[0.6, 0.8], [0.8, 0.9]]), ("scratch".into(), [[0.4, 0.5], [0.7, 0.8]])]
    {
        for (fraction, per_fold) in [0.1, 1.0].iter().zip(vals) {
            for (fold, dice) in per_fold.iter().enumerate() {
                runs.push(seg_run(&root, &init, *fraction, fold, *dice));
            }
        }
    }
    let out = root.join("report");
    let extras = [vismae_report::Extra { section: "Predictions".into(), caption: "an overlay".into(), path: png }];
    let r = vismae_report::build(&runs, &out, "test report", &extras).unwrap_or_else(|e| panic!("{e}"));
    // the table at 100 %: rows VIS-MAE-Generic then scratch; mean ± sample sd over the 2 folds
    assert_eq!(r.tables.len(), 2);
    let full = &r.tables[0];
    assert!(
        full.contains("| VIS-MAE-Generic | 0.8500 ± 0.0707 (n=2) | 0.5000 ± 0.0000 (n=2) | 0.2500 ± 0.0000 (n=2) |"),
        "{full}"
    );
    assert!(full.contains("| scratch | 0.7500 ± 0.0707 (n=2) |"), "{full}");
    assert!(r.tables[1].contains("| VIS-MAE-Generic | 0.7000 ± 0.1414 (n=2) |"), "{}", r.tables[1]);
    assert!(full.lines().position(|l| l.contains("VIS-MAE")) < full.lines().position(|l| l.contains("scratch")));
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap_or_default();
    assert!(csv.contains("Dataset501_Colin,Dice,scratch,0.1,0.45"), "{csv}");
    // figures: label efficiency per metric, fine-tuning curves, pre-training curves; SVG and PNG
    let names: Vec<String> =
        r.figures.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    for want in [
        "label-efficiency-dataset501-colin-dice.svg",
        "curves-segmentation-dataset501-colin.png",
        "curves-pretraining-0-sample-pretrain.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let svg =
        std::fs::read_to_string(out.join("figures/label-efficiency-dataset501-colin-dice.svg")).unwrap_or_default();
    for text in ["% of training labels", "VIS-MAE-Generic", "scratch", "Dice"] {
        assert!(svg.contains(text), "the SVG lacks {text:?}");
    }
    let img = image::open(out.join("figures/label-efficiency-dataset501-colin-dice.png"))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_rgb8();
    assert_eq!((img.width(), img.height()), (900, 360));
    // both line colours are drawn, and dark text pixels exist (the bundled font rendered)
    let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
    assert!(has([0, 114, 178]) && has([213, 94, 0]), "line colours missing");
    assert!(img.pixels().filter(|p| p.0.iter().all(|&v| v < 80)).count() > 500, "no text rendered");
    // the report files link everything; the HTML is self-contained
    let md = std::fs::read_to_string(&r.markdown).unwrap_or_default();
    assert!(
        md.contains("figures/label-efficiency-dataset501-colin-dice.png") && md.contains("images/00-overlay.png"),
        "{md}"
    );
    let html = std::fs::read_to_string(&r.html).unwrap_or_default();
    assert!(html.contains("<svg") && html.contains("data:image/png;base64,") && !html.contains("src=\"figures/"));
    // an existing report is never overwritten
    let again = vismae_report::build(&runs, &out, "again", &[]);
    assert!(again.is_err_and(|e| e.to_string().contains("not empty")));
    // a folder that is not a run is named
    let bad = vismae_report::build(&[root.join("nothing")], &root.join("r2"), "x", &[]);
    assert!(bad.is_err_and(|e| e.to_string().contains("nothing")));
}
