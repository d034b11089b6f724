//! `vismae study`: killed mid-run and run again, it finishes with the uninterrupted study's
//! per-case values and statistics; two initialisations of one recipe and seed give identical
//! cells; a folder holding something else is refused.

use crate::*;

const STUDY: &str = r#"
reference = "scratch"
folds = 2
fractions = [1.0]
resamples = 200

[finetune]
variant = "tiny"
size = 64
epochs = 4
warmup_epochs = 1.0
batch_size = 4
checkpoint_every = 1

[[dataset]]
name = "phantoms"
data = "train.csv"
task = "segmentation"

[[init]]
name = "scratch"
weights = "scratch"

[[init]]
name = "scratch again"
weights = "scratch"
"#;

#[test]
fn study_killed_and_run_again_reports_what_the_uninterrupted_study_reports() {
    let dir = scratch("study");
    phantom_seg_csv(&dir);
    let file = dir.join("study.toml");
    std::fs::write(&file, STUDY).unwrap_or_default();
    let args = |out: &std::path::Path| {
        let mut c = vismae();
        c.arg("study").arg(&file).arg("--out").arg(out).args(["--jobs", "1"]);
        c
    };
    let whole = dir.join("whole");
    let text = ok(&mut args(&whole));
    assert!(text.contains("4 cells: 4 ran now, 0 finished earlier, 0 failed"), "{text}");
    let read = |p: std::path::PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));

    let cut = dir.join("killed");
    // killed once its first cell is done
    let scored = || files_named(&cut, "summary.json").iter().any(|p| p.parent().is_some_and(|d| d.ends_with("test")));
    kill_once(&mut args(&cut), "a cell was scored", scored);
    assert!(!cut.join("report/per_case.csv").exists(), "the study finished before it was killed; lengthen it");
    let text = ok(&mut args(&cut));
    assert!(text.contains("4 cells:") && !text.contains("4 ran now"), "{text}");
    for f in ["report/per_case.csv", "report/stats.csv", "report/table.csv", "splits/phantoms.json"] {
        assert_eq!(read(cut.join(f)), read(whole.join(f)), "{f}");
    }
    // the two initialisations are the same recipe with the same seed: identical cells
    let stats = read(whole.join("report/stats.csv"));
    assert!(stats.lines().skip(1).all(|l| l.contains(",0,0,0,1,all-differences-zero")), "{stats}");

    // `vismae report` of a study folder writes the same report elsewhere
    let again = dir.join("report-again");
    ok(vismae().arg("report").arg(&whole).arg("--out").arg(&again));
    assert_eq!(read(again.join("stats.csv")), read(whole.join("report/stats.csv")));

    // a folder that holds something else is refused, and left as it was
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap_or_default();
    std::fs::write(other.join("notes.txt"), "mine").unwrap_or_default();
    let out = args(&other).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert_eq!(std::fs::read_dir(&other).map(|d| d.count()).unwrap_or(0), 1);
}
