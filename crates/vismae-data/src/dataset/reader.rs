//! Reading the sharded dataset for training: a compact index (12 bytes an image, whatever the
//! manifests say), memory-mapped shards for random access, filters by modality and by id lists,
//! and a loader that decodes and augments batches on worker threads, in a deterministic order
//! for a given seed and epoch, with at most a few batches in flight.

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};

use memmap2::Mmap;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{DatasetInfo, ImageRecord, read_info, shard_paths};
use crate::error::{DataError, Reason};

/// Which images to use.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Keep these modalities only (`CT`, `MR`, `PET`, `XR`, `US`, ...); empty keeps all.
    pub modalities: Vec<String>,
    /// Keep images whose patient, study or series id is listed; `None` keeps all.
    pub ids: Option<HashSet<String>>,
    /// Leave out images whose patient, study or series id is listed.
    pub exclude_ids: HashSet<String>,
}

impl Filter {
    fn keeps(&self, r: &ImageRecord) -> bool {
        if !self.modalities.is_empty() && !self.modalities.iter().any(|m| m.eq_ignore_ascii_case(&r.modality)) {
            return false;
        }
        let ids = [&r.patient_id, &r.study_uid, &r.series_uid];
        let listed = |set: &HashSet<String>| ids.iter().any(|i| i.as_ref().is_some_and(|i| set.contains(i)));
        if let Some(keep) = &self.ids
            && !listed(keep)
        {
            return false;
        }
        !listed(&self.exclude_ids)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    shard: u32,
    slot: u32,
    modality: u32,
}

/// A dataset opened for reading.
pub struct ShardedDataset {
    root: PathBuf,
    info: DatasetInfo,
    maps: Vec<Mmap>,
    entries: Vec<Entry>,
    modalities: Vec<String>,
}

impl ShardedDataset {
    /// Opens the dataset at `root`, keeping the images `filter` selects.
    pub fn open(root: &Path, filter: &Filter) -> Result<Self, DataError> {
        let info = read_info(root)?;
        let mut maps = Vec::new();
        let mut entries = Vec::new();
        let mut modalities: Vec<String> = Vec::new();
        loop {
            let n = maps.len();
            let (data, manifest) = shard_paths(root, n);
            if !manifest.exists() {
                break;
            }
            let file = std::fs::File::open(&data).map_err(|e| DataError::new(&data, Reason::Io, e.to_string()))?;
            let map = map_readonly(&file).map_err(|e| DataError::new(&data, Reason::Io, e.to_string()))?;
            let reader = std::io::BufReader::new(
                std::fs::File::open(&manifest).map_err(|e| DataError::new(&manifest, Reason::Io, e.to_string()))?,
            );
            let mut count = 0;
            for (i, line) in reader.lines().enumerate() {
                let line = line.map_err(|e| DataError::new(&manifest, Reason::Io, e.to_string()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let r: ImageRecord = serde_json::from_str(&line)
                    .map_err(|e| DataError::new(&manifest, Reason::Corrupt, format!("line {}: {e}", i + 1)))?;
                count += 1;
                if !filter.keeps(&r) {
                    continue;
                }
                let m = match modalities.iter().position(|m| *m == r.modality) {
                    Some(m) => m,
                    None => {
                        modalities.push(r.modality.clone());
                        modalities.len() - 1
                    }
                };
                entries.push(Entry { shard: n as u32, slot: r.slot as u32, modality: m as u32 });
            }
            if map.len() != count * info.record_bytes() {
                return Err(DataError::new(
                    &data,
                    Reason::Corrupt,
                    format!("{} bytes for {count} records of {} bytes", map.len(), info.record_bytes()),
                ));
            }
            maps.push(map);
        }
        Ok(Self { root: root.into(), info, maps, entries, modalities })
    }

    /// The dataset folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `dataset.json`.
    pub fn info(&self) -> &DatasetInfo {
        &self.info
    }

    /// Selected images by modality.
    pub fn modality_counts(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for e in &self.entries {
            *counts.entry(self.modalities[e.modality as usize].clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Selected images.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pixels of selected image `i` (`size * size * channels` bytes, row-major, channels interleaved).
    pub fn pixels(&self, i: usize) -> &[u8] {
        let e = self.entries[i];
        let n = self.info.record_bytes();
        &self.maps[e.shard as usize][e.slot as usize * n..(e.slot as usize + 1) * n]
    }

    /// Modality of selected image `i`.
    pub fn modality(&self, i: usize) -> &str {
        &self.modalities[self.entries[i].modality as usize]
    }
}

/// The one `unsafe` in vismae.
#[allow(unsafe_code)]
fn map_readonly(file: &std::fs::File) -> std::io::Result<Mmap> {
    // SAFETY: a mapping is undefined behaviour only if the file is truncated or written while
    // mapped. Committed shards are never modified: ingest only adds new shards (written under
    // temporary names, then renamed), and nothing in vismae truncates or rewrites a shard.
    let map = unsafe { memmap2::MmapOptions::new().map_copy_read_only(file) }?;
    // batches read images in shuffled order: ask the kernel not to read ahead around each access,
    // so resident shard pages stay close to what was read
    map.advise(memmap2::Advice::Random)?;
    Ok(map)
}

/// Settings of the batch loader.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of the order and the augmentation.
    pub seed: u64,
    /// Decoding threads.
    pub workers: usize,
    /// Horizontal flip with probability 0.5.
    pub hflip: bool,
    /// Drop the last incomplete batch (as the reference's `drop_last=True`).
    pub drop_last: bool,
}

/// One batch: `[B, channels, size, size]` values in `[0, 1]`, and which images they are.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Position of the batch in the epoch.
    pub number: usize,
    /// Selected-image indices.
    pub indices: Vec<usize>,
    /// `B * size * size` values.
    pub data: Vec<f32>,
}

/// The order of an epoch: a seeded shuffle of all selected images.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407)));
    order
}

/// Batches of one epoch, decoded by `workers` threads; worker `w` makes batches `w, w + W, ...`
/// and hands them over through a channel of depth 2, so order is fixed and memory is bounded.
pub fn epoch_batches(ds: Arc<ShardedDataset>, opts: &LoaderOptions, epoch: u64) -> impl Iterator<Item = Batch> {
    epoch_batches_from(ds, opts, epoch, 0)
}

/// [`epoch_batches`] starting at batch `first` of the epoch (a resumed run skips the batches it
/// already trained on without decoding them); batch numbers and contents are those of the whole epoch.
pub fn epoch_batches_from(
    ds: Arc<ShardedDataset>,
    opts: &LoaderOptions,
    epoch: u64,
    first: usize,
) -> impl Iterator<Item = Batch> {
    let order = Arc::new(epoch_order(ds.len(), opts.seed, epoch));
    let b = opts.batch_size.max(1);
    let n_batches = if opts.drop_last { order.len() / b } else { order.len().div_ceil(b) };
    let first = first.min(n_batches);
    let todo = n_batches - first;
    let workers = opts.workers.clamp(1, todo.max(1));
    let receivers: Vec<Receiver<Batch>> = (0..workers)
        .map(|w| {
            let (tx, rx) = sync_channel(2);
            let (ds, order, opts) = (ds.clone(), order.clone(), opts.clone());
            std::thread::spawn(move || {
                let (side, c) = (ds.info().size, ds.info().channels);
                for number in (first + w..n_batches).step_by(workers) {
                    let indices: Vec<usize> = order[number * b..((number + 1) * b).min(order.len())].to_vec();
                    let mut data = Vec::with_capacity(indices.len() * side * side * c);
                    for &i in &indices {
                        let px = ds.pixels(i);
                        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ (epoch << 40) ^ i as u64);
                        let flip = opts.hflip && rng.random::<bool>();
                        // interleaved HWC bytes to planar CHW values
                        for ch in 0..c {
                            for y in 0..side {
                                for x in 0..side {
                                    let sx = if flip { side - 1 - x } else { x };
                                    data.push(px[(y * side + sx) * c + ch] as f32 / 255.0);
                                }
                            }
                        }
                    }
                    if tx.send(Batch { number, indices, data }).is_err() {
                        return;
                    }
                }
            });
            rx
        })
        .collect();
    (0..todo).map_while(move |k| receivers[k % workers].recv().ok())
}
