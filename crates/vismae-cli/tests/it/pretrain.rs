//! Pre-training: bit-exact resume after a kill, the non-finite stop, two devices against one, reconstruction.

use crate::*;

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
    ok(&mut args(&whole));
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
    kill_when(&mut args(&cut), &cut.join("checkpoints/step-00000004/state.json"));
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
