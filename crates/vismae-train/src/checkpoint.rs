//! Checkpoints of any training run: `RUN/checkpoints/<unit>-N/` holds the model and optimizer
//! (burn records) and `state.json` (the position and whatever the run needs to continue). A
//! checkpoint is written into a temporary folder and renamed into place, so a `kill -9` or a full
//! disk leaves either the whole checkpoint or none (a failed write removes the temporary folder
//! and stops the run naming the file); the newest `keep` are kept. Also the metric-log trimming
//! a resumed run needs.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use serde::de::DeserializeOwned;

use vismae_run::RunDir;
use vismae_run::run_dir::write_synced;

use crate::error::{Result, TrainError};

/// The folder holding a run's checkpoints.
pub fn dir(run: &RunDir) -> PathBuf {
    run.join("checkpoints")
}

fn numbered(root: &Path, unit: &str) -> Vec<(usize, PathBuf)> {
    let prefix = format!("{unit}-");
    let mut all: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix(&prefix)?.parse().ok()?, e.path()))
        })
        .collect();
    all.sort();
    all
}

/// The latest complete checkpoint (`state.json` present) whose folder is named `<unit>-N`.
pub fn latest(run: &RunDir, unit: &str) -> Option<(usize, PathBuf)> {
    numbered(&dir(run), unit).into_iter().rev().find(|(_, p)| p.join("state.json").is_file())
}

/// Writes checkpoint `<unit>-n` (model, optimizer, `state`) atomically and keeps the newest `keep`.
pub fn save<B, M, O, S>(run: &RunDir, unit: &str, n: usize, model: &M, optim: &O, state: &S, keep: usize) -> Result<()>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: Serialize,
{
    let root = dir(run);
    let name = format!("{unit}-{n:08}");
    let fail = |what: &str, e: String| TrainError::Checkpoint {
        path: root.join(&name),
        reason: format!("writing the {what}: {e}"),
    };
    std::fs::create_dir_all(&root).map_err(|e| fail("folder", e.to_string()))?;
    let tmp = root.join(format!(".tmp-{name}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| fail("folder", e.to_string()))?;
    // the bytes NamedMpkFileRecorder would write (same named MessagePack), written and synced
    // by the one writer whose failures name the file
    let bytes: Vec<u8> = Recorder::<B>::record(
        &NamedMpkBytesRecorder::<FullPrecisionSettings>::default(),
        model.clone().into_record(),
        (),
    )
    .map_err(|e| fail("model", e.to_string()))?;
    let written = |file: &str, what: &str, bytes: &[u8]| {
        write_synced(&tmp.join(file), bytes).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            fail(what, format!("{}: {e}", tmp.join(file).display()))
        })
    };
    written("model.mpk", "model", &bytes)?;
    let bytes: Vec<u8> =
        Recorder::<B>::record(&NamedMpkBytesRecorder::<FullPrecisionSettings>::default(), optim.to_record(), ())
            .map_err(|e| fail("optimizer", e.to_string()))?;
    written("optimizer.mpk", "optimizer", &bytes)?;
    let text = serde_json::to_string_pretty(state).map_err(|e| fail("state", e.to_string()))?;
    written("state.json", "state", text.as_bytes())?;
    let final_dir = root.join(&name);
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(|e| fail("rename", e.to_string()))?;
    let all = numbered(&root, unit);
    for (_, old) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Loads the model, optimizer and state of the checkpoint in `folder` onto `device`.
pub fn load<B, M, O, S>(folder: &Path, model: M, optim: O, device: &B::Device) -> Result<(M, O, S)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: DeserializeOwned,
{
    let at = |f: &str| folder.join(f);
    let bad = |f: &str, e: String| TrainError::Checkpoint { path: at(f), reason: e };
    let model = model
        .load_file(at("model.mpk"), &NamedMpkFileRecorder::<FullPrecisionSettings>::new(), device)
        .map_err(|e| bad("model.mpk", e.to_string()))?;
    let bytes = std::fs::read(at("optimizer.mpk")).map_err(|e| bad("optimizer.mpk", e.to_string()))?;
    let record = Recorder::<B>::load(&NamedMpkBytesRecorder::<FullPrecisionSettings>::default(), bytes, device)
        .map_err(|e| bad("optimizer.mpk", e.to_string()))?;
    let optim = optim.load_record(record);
    let text = std::fs::read_to_string(at("state.json")).map_err(|e| bad("state.json", e.to_string()))?;
    let state = serde_json::from_str(&text).map_err(|e| bad("state.json", e.to_string()))?;
    Ok((model, optim, state))
}

/// Drops the lines of `RUN/<name>` whose `key` is above `upto` (logged by an interrupted run after
/// its last checkpoint), so a resumed run's lines follow on without repeats.
pub fn truncate_jsonl(run: &RunDir, name: &str, key: &str, upto: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(run.join(name)) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v[key].as_u64())
                .is_some_and(|s| s as usize <= upto)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Ok(run.write_atomic(name, kept.as_bytes())?)
}
