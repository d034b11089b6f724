//! Multi-node training as several processes over loopback: 2 and 3 nodes log the losses of one
//! process with as many replicas; a killed node and a stalled one stop the others, naming it, and
//! every node resumes (with another node count); nodes that differ refuse to start; fine-tuning
//! and a study's cells on 2 nodes and 2 devices log the one-replica run. These runs fail without
//! the patched burn-collective (its second global all-reduce never completed).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::*;

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `vismae ARGS` as node `rank` of `nodes`, coordinated at `port`.
fn node(args: &[String], nodes: usize, rank: usize, port: u16, data_port: u16) -> Command {
    node_waiting(args, nodes, rank, port, data_port, 20)
}

/// [`node`] with a timeout of `timeout` seconds.
fn node_waiting(args: &[String], nodes: usize, rank: usize, port: u16, data_port: u16, timeout: u32) -> Command {
    let mut c = vismae();
    c.args(args)
        .args(["--nodes", &nodes.to_string(), "--node-rank", &rank.to_string()])
        .args(["--coordinator", &format!("127.0.0.1:{port}"), "--data-port", &data_port.to_string()])
        .args(["--node-timeout", &timeout.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for `child` at most `limit`; its exit status and stderr.
fn finish(mut child: Child, limit: Duration) -> (bool, String) {
    let started = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a node ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Nodes 0 and 1 of a 2-node run of `args`, each waiting at most `timeout` seconds for the other.
fn two_nodes(args: &[String], timeout: u32) -> (Child, Child) {
    let port = free_port();
    let spawn =
        |rank| node_waiting(args, 2, rank, port, free_port(), timeout).spawn().unwrap_or_else(|e| panic!("{e}"));
    (spawn(0), spawn(1))
}

/// Waits (at most 120 s) until `path` exists; `what` names it in the failure.
fn wait_for(path: &Path, what: &str) {
    let started = Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "{what} not there after 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `nodes` nodes of `args` to the end; every one must succeed.
fn all_nodes(args: &[String], nodes: usize) {
    let port = free_port();
    let children: Vec<Child> =
        (0..nodes).map(|r| node(args, nodes, r, port, free_port()).spawn().unwrap_or_else(|e| panic!("{e}"))).collect();
    for (r, c) in children.into_iter().enumerate() {
        let (ok, err) = finish(c, Duration::from_secs(300));
        assert!(ok, "node {r} of {nodes} failed:\n{err}");
    }
}

fn dataset(name: &str) -> std::path::PathBuf {
    let ds = scratch(name);
    let _ = std::fs::remove_dir_all(&ds);
    ok(vismae().args(["ingest", "--size", "32", "--out"]).arg(&ds).arg(fixture("../dicom")));
    ds
}

fn pretrain_args(ds: &Path, out: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["pretrain", "--variant", "tiny", "--batch-size", "6", "--steps", &steps.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for s in ["lr=1e-3", "warmup_epochs=0.1", "reconstruct_every=0"] {
        a.extend(["--set".to_string(), s.to_string()]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(["--data".into(), ds.display().to_string(), "--out".into(), out.display().to_string()]);
    a
}

fn assert_close(want: &[(u64, f64, f64)], got: &[(u64, f64, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (a, b) in want.iter().zip(got) {
        let rel = (a.1 - b.1).abs() / a.1.abs();
        assert!(a.0 == b.0 && rel < 1e-5, "{what}, step {}: {} against {} (relative {rel:e})", a.0, a.1, b.1);
    }
}

#[test]
fn two_and_three_nodes_log_the_losses_of_one_process_with_as_many_replicas() {
    let ds = dataset("nodes-ds");
    for nodes in [2usize, 3] {
        let one = scratch(&format!("nodes-one-{nodes}"));
        let many = scratch(&format!("nodes-many-{nodes}"));
        for d in [&one, &many] {
            let _ = std::fs::remove_dir_all(d);
        }
        let accum = ["--accum-steps", "2"];
        ok(vismae().args(pretrain_args(&ds, &one, 20, &accum)).args(["--devices", &nodes.to_string()]));
        all_nodes(&pretrain_args(&ds, &many, 20, &["--accum-steps", "2", "--devices", "1"]), nodes);
        let want = metrics(&one);
        assert_eq!(want.len(), 20);
        assert_close(&want, &metrics(&many), &format!("{nodes} nodes against 1 process with {nodes} replicas"));
        // rank 0 alone wrote the weights, and they load
        let text = ok(vismae().args(["weights", "inspect"]).arg(many.join("weights.safetensors")));
        assert!(text.contains("mae"), "{text}");
    }
}

#[test]
fn a_killed_node_stops_the_others_naming_it_and_every_node_resumes() {
    let ds = dataset("nodes-kill-ds");
    let (reference, run) = (scratch("nodes-kill-ref"), scratch("nodes-kill"));
    for d in [&reference, &run] {
        let _ = std::fs::remove_dir_all(d);
    }
    let steps = 150;
    ok(vismae().args(pretrain_args(&ds, &reference, steps, &[])).args(["--devices", "2"]));
    let args = pretrain_args(&ds, &run, steps, &["--checkpoint-every", "5", "--devices", "1"]);
    let (rank0, mut rank1) = two_nodes(&args, 20);
    // kill node 1 once a checkpoint exists
    wait_for(&run.join("checkpoints/step-00000010/state.json"), "checkpoint 10");
    let _ = rank1.kill();
    let _ = rank1.wait();
    let killed = Instant::now();
    let (ok0, err) = finish(rank0, Duration::from_secs(60));
    let waited = killed.elapsed();
    assert!(!ok0, "node 0 went on without node 1");
    assert!(waited < Duration::from_secs(25), "node 0 took {waited:?} to stop (timeout 20 s)");
    assert!(err.contains("node 1") && err.contains("--resume") && err.contains("Last checkpoint"), "{err}");
    let before = metrics(&run).len();
    assert!(before < steps, "the run finished before node 1 was killed; lengthen it");
    // every node resumes from rank 0's checkpoint, here with three nodes
    let resume: Vec<String> =
        ["pretrain", "--resume", &run.display().to_string()].iter().map(|s| s.to_string()).collect();
    all_nodes(&resume, 3);
    let want = metrics(&reference);
    let got = metrics(&run);
    assert_eq!(got.len(), steps, "the resumed run did not finish");
    // to float rounding over the first steps after the resume (rounding grows over hundreds of steps)
    let check = (before + 20).min(steps);
    assert_close(&want[..check], &got[..check], "resumed with 3 nodes against 1 process with 2 replicas");
}

#[test]
fn a_stalled_node_stops_the_others_within_the_timeout_naming_it() {
    let ds = dataset("nodes-stall-ds");
    let run = scratch("nodes-stall");
    let _ = std::fs::remove_dir_all(&run);
    let args = pretrain_args(&ds, &run, 2000, &["--checkpoint-every", "5", "--devices", "1"]);
    let timeout = 10;
    let (rank0, mut rank1) = two_nodes(&args, timeout);
    wait_for(&run.join("checkpoints/step-00000005/state.json"), "checkpoint 5");
    // node 1 stops (its process is frozen, its port still takes connections)
    let stopped = Command::new("kill").args(["-STOP", &rank1.id().to_string()]).status();
    assert!(stopped.is_ok_and(|s| s.success()), "kill -STOP failed");
    let frozen = Instant::now();
    let (ok0, err) = finish(rank0, Duration::from_secs(90));
    let waited = frozen.elapsed();
    let _ = rank1.kill();
    let _ = rank1.wait();
    assert!(!ok0, "node 0 went on without node 1");
    assert!(
        waited < Duration::from_secs(u64::from(timeout) + 10),
        "node 0 took {waited:?} to stop (timeout {timeout} s)"
    );
    assert!(err.contains("node 1 (127.0.0.1:") && err.contains("stalled"), "{err}");
    assert!(err.contains("Last checkpoint") && err.contains("--resume"), "{err}");
}

#[test]
fn nodes_that_run_other_settings_refuse_to_start_naming_what_differs() {
    let ds = dataset("nodes-differ-ds");
    let out = scratch("nodes-differ");
    let _ = std::fs::remove_dir_all(&out);
    let same = pretrain_args(&ds, &out, 5, &["--devices", "1"]);
    let cases = [
        (vec!["--devices", "1", "--set", "mask_ratio=0.5"], "node 1 differs from node 0 in the settings"),
        (vec!["--devices", "2"], "node 1 has 2 replicas, node 0 1: give every node the same --devices"),
    ];
    for (other, says) in cases {
        let port = free_port();
        let other = pretrain_args(&ds, &out, 5, &other);
        let a = node(&same, 2, 0, port, free_port()).spawn().unwrap_or_else(|e| panic!("{e}"));
        let b = node(&other, 2, 1, port, free_port()).spawn().unwrap_or_else(|e| panic!("{e}"));
        for (r, c) in [a, b].into_iter().enumerate() {
            let (ok, err) = finish(c, Duration::from_secs(120));
            assert!(!ok, "node {r} started");
            assert!(err.contains(says), "node {r}: {err}");
        }
        // rank 0 made the run folder and wrote its config; no step ran
        assert!(metrics(&out).is_empty(), "a step ran");
        let _ = std::fs::remove_dir_all(&out);
    }
    // flags that need --nodes say so
    let e = fails(vismae().args(pretrain_args(&ds, &scratch("nodes-flag"), 1, &["--node-rank", "1"])));
    assert!(e.contains("need --nodes"), "{e}");
}

/// Per epoch: the mean training loss and the validation field `val`.
fn epochs(run: &Path, val: &str) -> Vec<(f64, f64)> {
    jsonl(&run.join("metrics.jsonl"))
        .iter()
        .map(|v| (v["loss"].as_f64().unwrap_or(f64::NAN), v[val].as_f64().unwrap_or(f64::NAN)))
        .collect()
}

/// Epoch by epoch: the training loss within 1e-5 relative, the validation field `val` within 1e-3
/// (validation goes through argmax and AUC: the last weight bits may flip a pixel).
fn assert_epochs_close(want: &[(f64, f64)], got: &[(f64, f64)], val: &str, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (e, (a, b)) in want.iter().zip(got).enumerate() {
        let rel = (a.0 - b.0).abs() / a.0.abs();
        assert!(rel < 1e-5, "{what}, epoch {}: loss {} against {} (relative {rel:e})", e + 1, a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-3, "{what}, epoch {}: {val} {} against {}", e + 1, a.1, b.1);
    }
}

#[test]
fn fine_tuning_on_two_devices_and_on_two_nodes_logs_the_one_replica_run() {
    // segmentation: the Dice + CE of the global batch, whatever the number of replicas
    let dir = scratch("nodes-ft");
    let _ = std::fs::remove_dir_all(&dir);
    phantom_seg_csv(&dir);
    let classes = dir.join("classes");
    phantom_class_folders(&classes);
    let tasks = [
        ("seg", dir.join("train.csv"), "val_dice", vec!["--set", "epochs=3"]),
        ("cls", classes, "val_loss", vec!["--set", "epochs=2", "--folds", "4"]),
    ];
    for (task, data, val, extra) in tasks {
        let args = |out: &Path, devices: &str| -> Vec<String> {
            let mut a: Vec<String> =
                ["finetune", task, "--init", "scratch", "--set", "variant=\"tiny\"", "--set", "size=64"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            for s in ["--set", "warmup_epochs=1", "--set", "batch_size=4", "--devices", devices] {
                a.push(s.into());
            }
            a.extend(extra.iter().map(|s| s.to_string()));
            a.extend(["--data".into(), data.display().to_string(), "--out".into(), out.display().to_string()]);
            a
        };
        let (one, two, nodes) =
            (dir.join(format!("{task}-one")), dir.join(format!("{task}-two")), dir.join(format!("{task}-nodes")));
        ok(vismae().args(args(&one, "1")));
        ok(vismae().args(args(&two, "2")));
        all_nodes(&args(&nodes, "1"), 2);
        let want = epochs(&one, val);
        assert!(!want.is_empty());
        for (got, what) in [(epochs(&two, val), "2 devices"), (epochs(&nodes, val), "2 nodes")] {
            assert_epochs_close(&want, &got, val, &format!("{task}, {what}"));
        }
        assert!(nodes.join("best.safetensors").exists() && nodes.join("final.safetensors").exists());
    }
}

/// Every number of a CSV file, row by row.
fn numbers(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().skip(1).map(|l| l.split(',').filter_map(|f| f.parse::<f64>().ok()).collect()).collect()
}

#[test]
fn a_study_on_two_devices_and_on_two_nodes_killed_and_run_again_reports_the_one_replica_study() {
    let dir = scratch("nodes-study");
    phantom_seg_csv(&dir);
    let study = |devices: usize| {
        format!(
            "reference = \"scratch\"\nfolds = 2\nfractions = [1.0]\nresamples = 200\n\n[finetune]\nvariant = \"tiny\"\nsize = 64\nepochs = 3\nwarmup_epochs = 1.0\nbatch_size = 3\ndevices = {devices}\n\n[[dataset]]\nname = \"phantoms\"\ndata = \"train.csv\"\ntask = \"segmentation\"\n\n[[init]]\nname = \"scratch\"\nweights = \"scratch\"\n"
        )
    };
    for d in [1, 2] {
        std::fs::write(dir.join(format!("study{d}.toml")), study(d)).unwrap_or_default();
    }
    let args = |file: &str, out: &Path| -> Vec<String> {
        vec!["study".into(), dir.join(file).display().to_string(), "--out".into(), out.display().to_string()]
    };
    let (one, two, nodes) = (dir.join("one"), dir.join("two"), dir.join("nodes"));
    ok(vismae().args(args("study1.toml", &one)).args(["--jobs", "1"]));
    ok(vismae().args(args("study2.toml", &two)).args(["--jobs", "1"]));
    // on two nodes: node 1 is killed once the second cell starts; run again, the study finishes
    let on_nodes = args("study1.toml", &nodes);
    let (rank0, mut rank1) = two_nodes(&on_nodes, 20);
    wait_for(&nodes.join("cells/phantoms/scratch/1/fold-1/config.json"), "the second cell's config.json");
    let _ = rank1.kill();
    let _ = rank1.wait();
    let (ok0, err) = finish(rank0, Duration::from_secs(60));
    assert!(!ok0, "the study finished before node 1 was killed");
    assert!(err.contains("node 1") && err.contains("run the same command again on every node"), "{err}");
    assert!(!nodes.join("report/per_case.csv").exists());
    all_nodes(&on_nodes, 2);
    for fold in 0..2 {
        let cell = format!("cells/phantoms/scratch/1/fold-{fold}");
        let want = epochs(&one.join(&cell), "val_dice");
        assert_eq!(want.len(), 3, "{cell}");
        for (run, what) in [(&two, "2 devices"), (&nodes, "2 nodes")] {
            assert_epochs_close(&want, &epochs(&run.join(&cell), "val_dice"), "val_dice", &format!("{cell}, {what}"));
        }
    }
    // rank 0 scored every cell: the same per-case values (to the pixels the last weight bits may flip)
    let want = numbers(&one.join("report/per_case.csv"));
    assert!(!want.is_empty());
    for run in [&two, &nodes] {
        let got = numbers(&run.join("report/per_case.csv"));
        assert_eq!(got.len(), want.len(), "{}", run.display());
        for (a, b) in want.iter().flatten().zip(got.iter().flatten()) {
            assert!((a - b).abs() < 1e-3, "{}: per-case value {b} against {a}", run.display());
        }
    }
}
