//! Ingest and convert: resume after a kill at any moment, bad files reported by name.

use crate::*;

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
