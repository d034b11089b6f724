//! Untrusted files and long runs, through the binary: hostile headers refused at once by name
//! (no abort, no gigabytes), one writer per dataset and run folder (the second is told the
//! first one's pid), and a failed write (a full disk, injected with `VISMAE_FAIL_WRITES_AFTER`)
//! that stops the command naming the file, leaves nothing torn, and a rerun that continues.

use std::path::Path;

use crate::*;

/// The preamble, `DICM` and a file meta group (explicit VR little endian).
fn dicom_meta() -> Vec<u8> {
    let uid = b"1.2.840.10008.1.2.1\0";
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(8 + uid.len() as u32).to_le_bytes());
    out.extend_from_slice(&[2, 0, 0x10, 0, b'U', b'I']);
    out.extend_from_slice(&(uid.len() as u16).to_le_bytes());
    out.extend_from_slice(uid);
    out
}

fn run_fails(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{cmd:?} must fail with status 1:\n{text}");
    text
}

#[test]
fn convert_refuses_hostile_headers_at_once_naming_the_file() {
    let dir = scratch("hostile-convert");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    // 20,000 nested sequences: the parser's recursion used to overflow the stack (an abort)
    let mut nested = dicom_meta();
    for _ in 0..20_000 {
        nested.extend_from_slice(&[0x40, 0, 0x30, 0xA7, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    // a private OB declaring ~4 GiB, 64 bytes present: 4.1 GiB resident before
    let mut big = dicom_meta();
    big.extend_from_slice(&[0x09, 0, 0x10, 0x10, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF]);
    big.extend_from_slice(&[0u8; 64]);
    for (name, bytes, words) in
        [("nested.dcm", nested, "nesting depth is 65"), ("big_ob.dcm", big, "64 bytes are left")]
    {
        let input = dir.join(name);
        std::fs::write(&input, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let t = std::time::Instant::now();
        let text = run_fails(vismae().arg("convert").arg(&input).arg("--out").arg(dir.join(format!("{name}.png"))));
        assert!(t.elapsed().as_secs_f64() < 5.0, "{name} took {:?}", t.elapsed());
        assert!(text.contains(name) && text.contains(words), "{name}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{name}: {text}");
    }
    // --max-image-mib lowers the image limit: a 64 x 64 grey PNG is 48 KiB as float RGB
    let png = dir.join("ok.png");
    image::GrayImage::from_raw(64, 64, vec![9; 64 * 64]).map(|i| i.save(&png));
    ok(vismae().arg("convert").arg(&png).arg("--out").arg(dir.join("ok.out.png")));
    let text = run_fails(
        vismae().arg("convert").arg(&png).args(["--max-image-mib", "0", "--out"]).arg(dir.join("ok.out2.png")),
    );
    assert!(text.contains("width x height 64 x 64"), "{text}");
}

#[test]
fn a_second_writer_of_a_dataset_or_run_folder_is_refused_with_the_first_ones_pid() {
    let pid = format!("pid {}", std::process::id());
    let ds = scratch("locked-ds");
    let _ = std::fs::remove_dir_all(&ds);
    std::fs::create_dir_all(&ds).unwrap_or_else(|e| panic!("{e}"));
    let ingest = |ds: &Path| {
        let mut c = vismae();
        c.args(["ingest", "--size", "32", "--out"]).arg(ds).arg(fixture("../dicom/CT_small.dcm"));
        c
    };
    // the lock held here stands for another vismae process
    let held = vismae_run::DirLock::acquire(&ds).unwrap_or_else(|e| panic!("{e}"));
    let text = run_fails(&mut ingest(&ds));
    assert!(text.contains(&pid) && text.contains("locked-ds") && text.contains("writing this dataset"), "{text}");
    assert!(!ds.join("dataset.json").exists(), "nothing written into a held dataset");
    drop(held);
    ok(&mut ingest(&ds));
    // a live run folder: resuming it is refused before anything is read
    let run = scratch("locked-run");
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(run.join("config.json"), "{}").unwrap_or_else(|e| panic!("{e}"));
    let held = vismae_run::DirLock::acquire(&run).unwrap_or_else(|e| panic!("{e}"));
    for cmd in [&["pretrain", "--resume"][..], &["finetune", "seg", "--resume"]] {
        let text = run_fails(vismae().args(cmd).arg(&run));
        assert!(text.contains(&pid) && text.contains("in use by another vismae process"), "{cmd:?}: {text}");
    }
    drop(held);
    // released, the same command gets past the lock (and stops at the stand-in config)
    let text = run_fails(vismae().args(["pretrain", "--resume"]).arg(&run));
    assert!(!text.contains("in use"), "{text}");
}

/// Every file under `dir`, recursively, as paths relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).map(|r| r.display().to_string()).unwrap_or_default());
        }
    }
    out.sort();
    out
}

#[test]
fn a_full_disk_stops_ingest_naming_the_file_and_a_rerun_continues() {
    let ingest = |ds: &Path| {
        let mut c = vismae();
        c.args(["ingest", "--size", "32", "--shard-size", "4", "--jobs", "1", "--out"])
            .arg(ds)
            .arg(fixture("../dicom"));
        c
    };
    let whole = scratch("enospc-whole");
    let _ = std::fs::remove_dir_all(&whole);
    ok(&mut ingest(&whole));
    let manifests = |ds: &Path| -> Vec<String> {
        (0..).map_while(|k| std::fs::read_to_string(ds.join(format!("shards/{k:06}.jsonl"))).ok()).collect()
    };
    let want = manifests(&whole);
    assert!(want.len() > 3, "{want:?}");
    // writes: dataset.json, then the first shard's data: that one fails
    let ds = scratch("enospc-ds");
    let _ = std::fs::remove_dir_all(&ds);
    let text = run_fails(ingest(&ds).env("VISMAE_FAIL_WRITES_AFTER", "1"));
    assert!(text.contains("shards/000000.u8") && text.contains("no space left on device"), "{text}");
    assert_eq!(files(&ds.join("shards")), Vec::<String>::new(), "a torn or temporary shard was left");
    // later, with shards committed: whatever write fails, every shard left is whole
    let text = run_fails(ingest(&ds).env("VISMAE_FAIL_WRITES_AFTER", "6"));
    assert!(text.contains("enospc-ds") && text.contains("no space left on device"), "{text}");
    let left = files(&ds.join("shards"));
    assert!(left.iter().all(|f| !f.contains("tmp")), "{left:?}");
    assert!(left.iter().filter(|f| f.ends_with(".u8")).all(|f| left.contains(&f.replace(".u8", ".jsonl"))), "{left:?}");
    assert!(!manifests(&ds).is_empty(), "{left:?}");
    // space back: the rerun continues to the dataset an uninterrupted run writes
    ok(&mut ingest(&ds));
    let got = manifests(&ds);
    let hashes = |m: &[String]| -> Vec<String> {
        m.iter()
            .flat_map(|t| t.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_default()))
            .map(|v| v["hash"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(hashes(&got), hashes(&want));
}

#[test]
fn a_full_disk_stops_pretraining_naming_the_file_and_resume_ends_as_an_uninterrupted_run() {
    let ds = scratch("enospc-pt-ds");
    let _ = std::fs::remove_dir_all(&ds);
    ok(vismae().args(["ingest", "--size", "32", "--out"]).arg(&ds).arg(fixture("../nifti")));
    let args = |out: &Path| {
        let mut c = vismae();
        c.args(["pretrain", "--variant", "tiny", "--steps", "8", "--batch-size", "4", "--checkpoint-every", "2"])
            .args(["--set", "lr=1e-3", "--set", "warmup_epochs=0.1", "--set", "reconstruct_every=0", "--data"])
            .arg(&ds)
            .arg("--out")
            .arg(out);
        c
    };
    let whole = scratch("enospc-pt-whole");
    let _ = std::fs::remove_dir_all(&whole);
    ok(&mut args(&whole));
    let want = metrics(&whole);
    assert_eq!(want.len(), 8);
    // config.json, a few metric lines, then a checkpoint's files
    let run = scratch("enospc-pt");
    let _ = std::fs::remove_dir_all(&run);
    let text = run_fails(args(&run).env("VISMAE_FAIL_WRITES_AFTER", "6"));
    assert!(text.contains("enospc-pt") && text.contains("no space left on device"), "{text}");
    let left = files(&run);
    assert!(left.iter().all(|f| !f.contains("tmp")), "{left:?}");
    assert!(!run.join("weights.safetensors").exists());
    // space back: resuming ends where the uninterrupted run ended, step for step
    ok(vismae().arg("pretrain").arg("--resume").arg(&run));
    let got = metrics(&run);
    assert_eq!(got.len(), 8, "{got:?}");
    for (a, b) in got.iter().zip(&want) {
        assert_eq!((a.0, a.1.to_bits()), (b.0, b.1.to_bits()), "step {} differs after the failed write", a.0);
    }
    assert!(run.join("weights.safetensors").is_file());
}
