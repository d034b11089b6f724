//! `study::run` end to end on phantoms: a segmentation and a classification set, three
//! initialisations (MAE stand-in weights, scratch, and another tool's predictions on the study's
//! folds), two fractions, two folds. Checked: test folds partition each set and no cell trains
//! or selects on its test cases; per_case.csv holds every test case once per cell kind;
//! stats.csv's differences are those of per_case.csv; running again skips every cell; a cell
//! whose scoring was cut short is scored again; a changed study is refused; an added fraction
//! runs only its cells. (A study killed mid-training and continued is tested in vismae-cli.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use vismae_run::FinetuneConfig;
use vismae_workflow::study;

use crate::{Train, cropped, png, scratch};

fn seg_set(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("img")).unwrap_or_default();
    let mut csv = String::from("image,mask\n");
    for i in 0..16u64 {
        let (img, lab) = cropped(51, i, 32, 32, 32);
        png(&dir.join(format!("img/c{i:02}.png")), 32, 32, &img);
        png(&dir.join(format!("img/c{i:02}_mask.png")), 32, 32, &lab);
        csv.push_str(&format!("img/c{i:02}.png,img/c{i:02}_mask.png\n"));
    }
    std::fs::write(dir.join("seg.csv"), csv).unwrap_or_default();
    dir.join("seg.csv")
}

fn cls_set(dir: &Path) -> std::path::PathBuf {
    for c in ["clean", "lesion"] {
        std::fs::create_dir_all(dir.join("cls").join(c)).unwrap_or_default();
    }
    let (mut n, mut i) = ([0usize; 2], 0u64);
    while n[0] < 8 || n[1] < 8 {
        let (img, lab) = cropped(61, i, 32, 32, 32);
        i += 1;
        let class = usize::from(lab.contains(&2));
        if n[class] >= 8 {
            continue;
        }
        n[class] += 1;
        png(&dir.join(format!("cls/{}/p{i}.png", ["clean", "lesion"][class])), 32, 32, &img);
    }
    dir.join("cls")
}

const STUDY: &str = r#"
reference = "scratch"
folds = 2
fractions = [1.0, 0.5]
seed = 3
resamples = 500
jobs = 2

[finetune]
variant = "tiny"
size = 32
epochs = 2
warmup_epochs = 1.0
batch_size = 4
checkpoint_every = 1

[[dataset]]
name = "phantom seg"
data = "seg.csv"
task = "segmentation"

[[dataset]]
name = "phantom cls"
data = "cls"
task = "classification"

[[init]]
name = "scratch"
weights = "scratch"

[[init]]
name = "MAE"
weights = "mae.safetensors"
"#;

/// `per_case.csv` as (dataset, fraction, fold, init, case, metric) -> value.
fn per_case(dir: &Path) -> BTreeMap<(String, String, String, String, String, String), f64> {
    let text = std::fs::read_to_string(dir.join("report/per_case.csv")).unwrap_or_default();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let key = (f[0].into(), f[1].into(), f[2].into(), f[3].into(), f[4].into(), f[5].into());
            (key, f[6].parse().unwrap_or(f64::NAN))
        })
        .collect()
}

fn stats(dir: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("report/stats.csv")).unwrap_or_default();
    let mut lines = text.lines();
    let head: Vec<String> = lines.next().unwrap_or_default().split(',').map(String::from).collect();
    lines.map(|l| head.iter().cloned().zip(l.split(',').map(String::from)).collect()).collect()
}

#[test]
fn a_study_runs_resumes_refuses_changes_and_reports_paired_statistics() {
    vismae_train::parallel::set_workers(1);
    let dir = scratch("study");
    seg_set(&dir);
    cls_set(&dir);
    crate::agreement::mae_weights(&dir.join("mae.safetensors"));
    // another tool's "predictions" on the study's folds: the true masks of the whole set
    for k in 0..2 {
        let p = dir.join(format!("perfect/fold_{k}"));
        std::fs::create_dir_all(&p).unwrap_or_default();
        for i in 0..16 {
            std::fs::copy(dir.join(format!("img/c{i:02}_mask.png")), p.join(format!("c{i:02}.png")))
                .unwrap_or_default();
        }
    }
    let file = dir.join("study.toml");
    let seg_only_perfect = "\n[[init]]\nname = \"perfect\"\npredictions = \"perfect/fold_{k}\"\n";
    std::fs::write(&file, format!("{STUDY}{seg_only_perfect}")).unwrap_or_default();
    let out = dir.join("out");
    let say = |_: String| {};
    let s = study::run::<Train>(&file, &out, &Default::default(), 2, &say).unwrap_or_else(|e| panic!("{e}"));
    // 2 datasets x 2 trained inits x 2 fractions x 2 folds, + the predictions at fraction 1 for
    // both datasets (the classification one has no predictions.csv: those 2 cells fail)
    assert_eq!(s.cells, 16 + 4, "{s:?}");
    assert_eq!(s.failed.len(), 2, "{:?}", s.failed);
    assert!(s.failed.iter().all(|(c, _)| c.starts_with("phantom cls / perfect")), "{:?}", s.failed);

    // folds: the test folds partition each set; no cell trains or validates on its test cases
    let folds = study::folds(&out, "phantom seg").unwrap_or_else(|e| panic!("{e}"));
    let tested: Vec<&String> = folds.iter().flat_map(|f| &f.test).collect();
    assert_eq!(tested.len(), 16);
    assert_eq!(tested.iter().collect::<BTreeSet<_>>().len(), 16);
    assert!(out.join("splits/phantom-seg/splits_final.json").is_file());
    for (k, fold) in folds.iter().enumerate() {
        let cell = out.join(format!("cells/phantom-seg/MAE/0.5/fold-{k}"));
        let cfg = FinetuneConfig::read(&cell, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.test_cases, fold.test);
        assert!(cfg.train_cases.iter().chain(&cfg.val_cases).all(|c| !fold.test.contains(c)));
        assert!(cfg.train_cases.len() < fold.train.len(), "half the training labels");
    }

    // per-case values: every seg test case once per (init, fraction); perfect predictions Dice 1
    let pc = per_case(&out);
    for (init, fraction) in [("scratch", "1"), ("scratch", "0.5"), ("MAE", "0.5"), ("perfect", "1")] {
        let cases: BTreeSet<&String> = pc
            .keys()
            .filter(|k| k.0 == "phantom seg" && k.1 == fraction && k.3 == init && k.5 == "Dice")
            .map(|k| &k.4)
            .collect();
        assert_eq!(cases.len(), 16, "{init} at {fraction}");
    }
    assert!(pc.iter().filter(|(k, _)| k.3 == "perfect" && k.5 == "Dice").all(|(_, v)| (*v - 1.0).abs() < 1e-12));
    let cls_scores = pc.keys().filter(|k| k.0 == "phantom cls" && k.5 == "score").count();
    assert_eq!(cls_scores, 16 * 4, "16 cases x 2 inits x 2 fractions");

    // stats.csv: the Dice difference of perfect vs scratch is the mean of per-case differences
    let st = stats(&out);
    let row = st
        .iter()
        .find(|r| r["dataset"] == "phantom seg" && r["init"] == "perfect" && r["metric"] == "Dice")
        .unwrap_or_else(|| panic!("{st:?}"));
    let diffs: Vec<f64> = pc
        .iter()
        .filter(|(k, _)| k.0 == "phantom seg" && k.1 == "1" && k.3 == "perfect" && k.5 == "Dice")
        .map(|(k, v)| v - pc[&(k.0.clone(), k.1.clone(), k.2.clone(), "scratch".into(), k.4.clone(), k.5.clone())])
        .collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let num = |k: &str| row[k].parse::<f64>().unwrap_or(f64::NAN);
    assert_eq!(row["n"], "16");
    assert!((num("mean_diff") - mean).abs() < 1e-9, "{row:?} vs {mean}");
    assert!(num("ci_low") <= mean && mean <= num("ci_high") && num("ci_low") > 0.0, "{row:?}");
    assert!(
        num("p_value") < 0.01 && row["test"] == "wilcoxon-exact" && (num("p_value") - 2f64.powi(-15)).abs() < 1e-15,
        "16 positive differences: exact p = 2^-15, {row:?}"
    );
    let auc = st.iter().find(|r| r["dataset"] == "phantom cls" && r["metric"] == "ROC AUC" && r["fraction"] == "1");
    assert_eq!(auc.map(|r| r["test"].as_str()), Some("delong"));
    let report = std::fs::read_to_string(out.join("report/report.md")).unwrap_or_default();
    assert!(report.contains("| perfect |") && report.contains("50 % of the training labels"), "{report}");
    assert!(out.join("report/figures/label-efficiency-phantom-seg-Dice.svg").is_file());

    // again: nothing left but the two failing cells
    let again = study::run::<Train>(&file, &out, &Default::default(), 2, &say).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.skipped, again.ran, again.failed.len()), (18, 0, 2));
    assert_eq!(per_case(&out), pc);

    // a scored cell keeps its weights, not its checkpoints; one whose scoring was cut short (its
    // test folder incomplete) is scored again, to the same values
    let cell = out.join("cells/phantom-seg/MAE/1/fold-1");
    assert!(cell.join("best.safetensors").is_file() && !cell.join("checkpoints").exists());
    std::fs::remove_file(cell.join("test/summary.json")).unwrap_or_default();
    let again = study::run::<Train>(&file, &out, &Default::default(), 1, &say).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.ran, 1);
    assert_eq!(per_case(&out), pc, "the cell scores what it scored before");

    // a changed study is refused with the difference named; an added fraction runs only its cells
    std::fs::write(&file, format!("{}{seg_only_perfect}", STUDY.replace("epochs = 2", "epochs = 3")))
        .unwrap_or_default();
    let e = study::run::<Train>(&file, &out, &Default::default(), 2, &say).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("[finetune]") && e.contains("another --out"), "{e}");
    std::fs::write(&file, format!("{}{seg_only_perfect}", STUDY.replace("[1.0, 0.5]", "[1.0, 0.5, 0.25]")))
        .unwrap_or_default();
    let more = study::run::<Train>(&file, &out, &Default::default(), 2, &say).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((more.cells, more.ran), (28, 8), "{more:?}");
    let pc2 = per_case(&out);
    assert!(pc.iter().all(|(k, v)| pc2.get(k) == Some(v)), "earlier cells are unchanged");
}
