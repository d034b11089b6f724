//! `vismae finetune seg|cls`: [`resolve`] turns a request into the complete
//! [`FinetuneConfig`] before any work; [`start`] creates the run folder, writes `config.json` and
//! runs the task ([`seg`] or [`cls`]); [`resume`] reads the config back and continues from the
//! latest checkpoint. Both tasks share the epoch loop here: AdamW with a per-iteration warm-up +
//! cosine schedule, a shuffled pass over the training examples, validation after every epoch, the
//! best epoch's weights kept, `metrics.jsonl`, checkpoints every N epochs and `--resume`. Every
//! random draw (order, augmentation, stochastic depth) is a function of the seed, the epoch and
//! the step, so a resumed run logs exactly what the uninterrupted run logs.

pub mod cls;
pub mod groups;
mod resolve;
pub mod seg;

pub use groups::LrGroups;
pub use resolve::{FinetuneRequest, Resolved, SettingsFrom, describe, read_init, resolve};

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use vismae_model::layers::with_stochastic_seed;
use vismae_model::weights::{
    LoadOptions, StateDict, Visit, adapt_input_channels, apply_state_dict, export_state_dict, safetensors_io,
};
use vismae_run::{FinetuneConfig, ModelCard, RunDir, Task};

use crate::checkpoint;
use crate::cluster::{Fingerprints, Group, Topology};
use crate::error::{Result, TrainError};
use crate::pretrain::{Share, data_parallel, local_chunks};
use crate::schedule::WarmupCosine;
use crate::seeds::mix;

/// The optimisation settings of a fine-tuning run.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    /// Epochs.
    pub epochs: usize,
    /// Warm-up epochs (fractions allowed).
    pub warmup_epochs: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Peak and final learning rate.
    pub lr: (f64, f64),
    /// AdamW betas.
    pub betas: (f64, f64),
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed.
    pub seed: u64,
    /// Write a checkpoint every this many epochs (and after the last).
    pub checkpoint_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Which epoch's weights are kept as `best.safetensors`.
    pub keep: vismae_run::Keep,
    /// Learning rates of the encoder's parts.
    pub groups: LrGroups,
    /// No progress bar.
    pub quiet: bool,
    /// Validate every this many epochs (and after the last).
    pub validate_every: usize,
}

/// One validation: the number that selects the best epoch (greater is better) and the fields
/// logged with the epoch.
pub struct Validation {
    /// Selection score, greater is better (e.g. Dice, or the negated loss).
    pub score: f64,
    /// Logged fields, e.g. `{"val_dice": 0.8}`.
    pub fields: Map<String, Value>,
    /// Short text for the progress bar.
    pub brief: String,
}

/// A fine-tuning task: how to compute a training batch's loss and how to validate.
pub trait FinetuneTask<B: AutodiffBackend> {
    /// The network.
    type Model: AutodiffModule<B> + Visit<B>;
    /// A training batch's inputs, drawn once (the augmentation in batch order) and shared by the replicas.
    type Prepared: Sync;
    /// Training examples.
    fn train_len(&self) -> usize;
    /// The inputs of the examples `batch`; `rng` draws the augmentation.
    fn prepare(&self, batch: &[usize], rng: &mut ChaCha8Rng) -> Self::Prepared;
    /// Mean loss of a prepared batch on one replica.
    fn loss(&self, model: &Self::Model, batch: &Self::Prepared, device: &B::Device) -> Tensor<B, 1>;
    /// Values in [`FinetuneTask::statistics`].
    fn statistics_len(&self) -> usize;
    /// Sums over the images `first..end` of a prepared batch; summed over all parts of the
    /// batch, [`FinetuneTask::combine`] makes them its loss (data parallelism: the loss of the
    /// global batch, whatever the number of replicas).
    fn statistics(
        &self,
        model: &Self::Model,
        batch: &Self::Prepared,
        range: (usize, usize),
        device: &B::Device,
    ) -> Tensor<B, 1>;
    /// The mean loss of a batch of `images` from its summed statistics.
    fn combine(&self, statistics: Tensor<B, 1>, images: usize) -> Tensor<B, 1>;
    /// A hash of the training examples (every node of a multi-node run checks it against rank 0's).
    fn data_hash(&self) -> blake3::Hash;
    /// Validates the model (without autodiff).
    fn validate(&self, model: &<Self::Model as AutodiffModule<B>>::InnerModule, device: &B::Device) -> Validation;
}

/// How a fine-tuning run meets the other nodes of a multi-node run.
pub enum Nodes<B: Backend> {
    /// There are none.
    Alone,
    /// It joins them at its start and leaves at its end.
    Join(Topology),
    /// It trains in a group joined before (a study's cells, one after another), which stays joined.
    Joined(Arc<Group<B>>),
}

impl<B: Backend> From<Option<Topology>> for Nodes<B> {
    fn from(t: Option<Topology>) -> Self {
        t.map_or(Self::Alone, Self::Join)
    }
}

impl<B: Backend> Nodes<B> {
    /// This node's place, if there are others.
    pub fn topology(&self) -> Option<Topology> {
        match self {
            Self::Alone => None,
            Self::Join(t) => Some(t.clone()),
            Self::Joined(g) => Some(g.topology().clone()),
        }
    }

    /// Whether this node writes the run folder (one node, or rank 0).
    fn writes(&self) -> bool {
        self.topology().as_ref().is_none_or(Topology::writes)
    }
}

/// Where a fine-tuning run trains: replicas on this node's devices and, in a multi-node run, its
/// place among the nodes.
pub struct Parallel<B: Backend> {
    /// This node's replicas (on the CPU the same device may be listed several times).
    pub devices: Vec<B::Device>,
    /// The multi-node topology (`None`: one node).
    pub nodes: Option<Topology>,
    /// The group of a run that trains in one joined before ([`Nodes::Joined`]).
    pub group: Option<Arc<Group<B>>>,
    /// A hash of the run's settings (without the data path), checked against rank 0's.
    pub settings: blake3::Hash,
    /// Where a node other than rank 0 finds the run's checkpoints on `--resume` (its own run
    /// folder is a scratch folder).
    pub checkpoints: Option<RunDir>,
}

impl<B: Backend> Parallel<B> {
    /// One replica on `device`, one node.
    pub fn one(device: &B::Device) -> Self {
        Self { devices: vec![device.clone()], nodes: None, group: None, settings: blake3::hash(b""), checkpoints: None }
    }

    /// Replicas on `devices`, meeting the other `nodes`; `settings`: the hash nodes compare.
    fn new(devices: Vec<B::Device>, nodes: Nodes<B>, settings: blake3::Hash) -> Self {
        let topology = nodes.topology();
        let group = match nodes {
            Nodes::Joined(g) => Some(g),
            Nodes::Alone | Nodes::Join(_) => None,
        };
        Self { devices, nodes: topology, group, settings, checkpoints: None }
    }
}

/// Replicas of a step meet here: each puts the statistics of its part of the batch, and every one
/// gets their sum over all replicas of all nodes (the first replica of the node sums the node's
/// in replica order, then over the nodes).
struct Exchange<'a, B: AutodiffBackend> {
    parts: Mutex<Vec<Vec<f32>>>,
    total: Mutex<Option<std::result::Result<Vec<f32>, String>>>,
    barrier: Barrier,
    group: Option<&'a Group<B>>,
    len: usize,
    what: String,
}

impl<B: AutodiffBackend> Exchange<'_, B> {
    fn sum(&self, replica: usize, mine: Vec<f32>) -> Result<Vec<f32>> {
        if let Ok(mut p) = self.parts.lock() {
            p[replica] = mine;
        }
        self.barrier.wait();
        if replica == 0 {
            let total = self.node_total();
            if let Ok(mut t) = self.total.lock() {
                *t = Some(total);
            }
        }
        self.barrier.wait();
        let total = self.total.lock().ok().and_then(|t| t.clone());
        total.unwrap_or_else(|| Err("no sum".into())).map_err(TrainError::Stopped)
    }

    /// This node's parts summed, then summed over the nodes.
    fn node_total(&self) -> std::result::Result<Vec<f32>, String> {
        let mut total = vec![0f32; self.len];
        for p in self.parts.lock().map_err(|_| "poisoned".to_string())?.iter() {
            for (t, v) in total.iter_mut().zip(p) {
                *t += v;
            }
        }
        match self.group {
            None => Ok(total),
            Some(g) => {
                let t = Tensor::<B, 1>::from_data(TensorData::new(total, [self.len]), &Default::default());
                let s = g.sum(t, &self.what)?;
                Ok(s.into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default())
            }
        }
    }
}

/// One step's gradient and loss over several replicas and nodes: each replica computes the
/// statistics of its part of the batch, they are summed over all replicas, and each replica's
/// backward pass goes through the global loss (the chain rule through the summed statistics), so
/// the summed gradients are those of the whole batch's loss, Dice included, whatever the number of
/// replicas. Then the node's gradients are summed over the nodes as one bucket.
#[allow(clippy::too_many_arguments)]
fn replicated_step<B: AutodiffBackend, T: FinetuneTask<B> + Sync>(
    task: &T,
    model: &T::Model,
    devices: &[B::Device],
    share: Share,
    group: Option<&Group<B>>,
    batch: &T::Prepared,
    images: usize,
    stochastic: u64,
    what: String,
) -> Result<(GradientsParams, f64)>
where
    T::Model: Sync,
{
    let len = task.statistics_len();
    let local = local_chunks(images, devices.len(), share).len();
    let exchange = Exchange {
        parts: Mutex::new(vec![vec![0f32; len]; local.max(1)]),
        total: Mutex::new(None),
        barrier: Barrier::new(local.max(1)),
        group,
        len,
        what,
    };
    let device = &devices[0];
    let (grads, value) = if local == 0 {
        // more replicas in the run than images in the batch: this node only helps sum
        let total = exchange.sum(0, vec![0f32; len])?;
        let loss = task.combine(Tensor::from_data(TensorData::new(total, [len]), device), images);
        (GradientsParams::new(), crate::losses::scalar(loss))
    } else {
        let (grads, values) = data_parallel(model, devices, images, share, |replica: &T::Model, dev, (a, b), w| {
            with_stochastic_seed(stochastic, a as u64, || {
                let stats = task.statistics(replica, batch, (a, b), dev);
                let mine = stats.clone().into_data().convert::<f32>().to_vec::<f32>().unwrap_or_default();
                let total = exchange.sum(w, mine)?;
                let leaf = Tensor::<B, 1>::from_data(TensorData::new(total, [len]), dev).require_grad();
                let loss = task.combine(leaf.clone(), images);
                let value = crate::losses::scalar(loss.clone());
                let outer = leaf
                    .grad(&loss.backward())
                    .ok_or_else(|| TrainError::Replica { replica: w, reason: "the loss has no gradient".into() })?;
                let surrogate = (stats * Tensor::from_inner(outer)).sum();
                Ok((GradientsParams::from_grads::<B, _>(surrogate.backward(), replica), value))
            })
        })?;
        (grads, values.first().copied().unwrap_or(f64::NAN))
    };
    let Some(g) = group else { return Ok((grads, value)) };
    let (grads, _) = g.sum_gradients(model, &grads, &[], device, &exchange.what).map_err(TrainError::Stopped)?;
    Ok((grads, value))
}

/// Where a checkpoint left the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LoopState {
    epoch: usize,
    best_score: f64,
    best_epoch: usize,
    best_fields: Map<String, Value>,
}

/// What the loop did.
#[derive(Clone, Debug)]
pub struct LoopOutcome {
    /// Best score, its epoch (1-based) and the fields logged then.
    pub best: (f64, usize, Map<String, Value>),
    /// Epoch the run resumed after, if it did.
    pub resumed_from: Option<usize>,
}

/// Loads pre-trained weights into a fine-tuning model by name and shape and writes the key-by-key
/// report to `RUN/transfer_report.txt`; returns the model and the number of tensors applied.
/// A patch embedding of another channel count is adapted first, tensors under `drop` (key
/// prefixes: heads the new network replaces) are left out, and the report says so.
pub(crate) fn apply_init<B: Backend, M: Visit<B>>(
    model: M,
    sd: &StateDict,
    in_chans: usize,
    drop: &[(&str, &str)],
    run: &RunDir,
) -> Result<(M, usize)> {
    let mut sd = sd.clone();
    let mut notes: Vec<String> = adapt_input_channels(&mut sd, in_chans).into_iter().collect();
    for (prefix, why) in drop {
        let before = sd.tensors.len();
        sd.tensors.retain(|k, _| !k.starts_with(prefix));
        if sd.tensors.len() < before {
            notes.push(format!("{prefix}*: not loaded ({why})"));
        }
    }
    let (model, report) = apply_state_dict(model, &sd, LoadOptions::default())?;
    let mut text = report.to_string();
    if !notes.is_empty() {
        text.push_str("adapted:\n");
        for n in notes {
            text.push_str(&format!("  {n}\n"));
        }
    }
    run.write_atomic("transfer_report.txt", text.as_bytes())?;
    Ok((model, report.applied.len()))
}

/// Both parts of a split must hold examples.
pub(crate) fn check_sizes(train: usize, val: usize) -> Result<()> {
    if train == 0 || val == 0 {
        return Err(TrainError::invalid(format!(
            "{train} training and {val} validation images: both must be non-empty"
        )));
    }
    Ok(())
}

/// The card with the numbers of one validation (`val_dice`, `val_loss`, ...) and its epoch as
/// metrics.
fn with_metrics(card: &ModelCard, fields: &Map<String, Value>, epoch: usize) -> ModelCard {
    let mut c = card.clone();
    c.metrics = fields.iter().filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x))).collect();
    c.metrics.insert("epoch".into(), epoch as f64);
    c
}

/// Writes `weights.safetensors`-style files with the run's model card.
pub(crate) fn write_weights(mut sd: StateDict, card: &ModelCard, path: &Path) -> Result<()> {
    sd.set_card(card);
    Ok(safetensors_io::write(&sd, path)?)
}

/// Trains `model` on `task` in `run` (continuing from the latest checkpoint with `resume`);
/// writes `metrics.jsonl`, `best.safetensors`, `final.safetensors` and checkpoints.
pub fn train<B: AutodiffBackend, T: FinetuneTask<B> + Sync>(
    task: &T,
    mut model: T::Model,
    ls: &LoopSettings,
    run: &RunDir,
    resume: bool,
    card: &ModelCard,
    par: &Parallel<B>,
) -> Result<LoopOutcome>
where
    T::Model: Sync,
{
    let device = par.devices.first().ok_or_else(|| TrainError::invalid("no device to train on"))?;
    let n = task.train_len();
    let bs = ls.batch_size.max(1);
    let per_epoch = n.div_ceil(bs);
    let mut optim = AdamWConfig::new()
        .with_beta_1(ls.betas.0 as f32)
        .with_beta_2(ls.betas.1 as f32)
        .with_epsilon(1e-8)
        .with_weight_decay(ls.weight_decay as f32)
        .init::<B, T::Model>();
    let mut state = LoopState { epoch: 0, best_score: f64::NEG_INFINITY, best_epoch: 0, best_fields: Map::new() };
    let mut resumed_from = None;
    let mut last_fields: Option<(Map<String, Value>, usize)> = None;
    // rank 0 alone writes the run folder; another node reads rank 0's checkpoints on a resume
    let writer = par.nodes.as_ref().is_none_or(Topology::writes);
    let from = par.checkpoints.as_ref().unwrap_or(run);
    if resume && let Some((epoch, dir)) = checkpoint::latest(from, "epoch") {
        (model, optim, state) = checkpoint::load(&dir, model, optim, device)?;
        debug_assert_eq!(state.epoch, epoch);
        resumed_from = Some(epoch);
        if writer {
            checkpoint::truncate_jsonl(run, "metrics.jsonl", "epoch", epoch)?;
        }
    } else if resume && writer {
        checkpoint::truncate_jsonl(run, "metrics.jsonl", "epoch", 0)?;
    }
    let share = Share::of(par.nodes.as_ref(), par.devices.len());
    // a run of its own joins the nodes now and leaves them at its end; one in a joined group checks
    let mut own = None;
    if let Some(t) = &par.nodes {
        let weights = crate::cluster::bucket::weights_hash::<B, _>(&model);
        let mine = Fingerprints::new(&par.settings, &task.data_hash(), &weights);
        match &par.group {
            Some(g) => g.check(&mine, par.devices.len())?,
            None => own = Some(Group::<B>::start(t.clone(), par.devices.len(), ls.quiet, device, &mine)?),
        }
    }
    let group = par.group.as_deref().or(own.as_ref());
    let depths = if ls.groups.is_uniform() {
        Vec::new()
    } else {
        let (m, d) = groups::depths::<B, _>(model);
        model = m;
        d
    };
    let sched = WarmupCosine { lr: ls.lr.0, min_lr: ls.lr.1, warmup: ls.warmup_epochs, total: ls.epochs as f64 };
    let pb = if ls.quiet || !writer {
        indicatif::ProgressBar::hidden()
    } else {
        RunDir::bar(ls.epochs, state.epoch, "finetune", "epochs")
    };
    for epoch in state.epoch..ls.epochs {
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(ls.seed, epoch as u64, 0x6570_6f63));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut losses = Vec::with_capacity(per_epoch);
        for (it, chunk) in order.chunks(bs).enumerate() {
            let step = (epoch * per_epoch + it) as u64;
            // under the lock: a reseed must not land inside another thread's initialisation
            crate::seeds::locked(|| B::seed(device, mix(ls.seed, step, 1)));
            let prepared = task.prepare(chunk, &mut rng);
            let stochastic = mix(ls.seed ^ 0x64726f70, step, 0);
            let (grads, value) = if share.total == 1 {
                let loss = with_stochastic_seed(stochastic, 0, || task.loss(&model, &prepared, device));
                let value = crate::losses::scalar(loss.clone());
                // no backward pass through a non-finite loss
                let grads = value.is_finite().then(|| GradientsParams::from_grads::<B, _>(loss.backward(), &model));
                (grads, value)
            } else {
                let what = format!("epoch {} step {}", epoch + 1, it + 1);
                let (grads, value) =
                    replicated_step(task, &model, &par.devices, share, group, &prepared, chunk.len(), stochastic, what)
                        .map_err(|e| {
                            pb.abandon();
                            let last = checkpoint::latest(from, "epoch").map(|(k, _)| format!("after epoch {k}"));
                            TrainError::Stopped(format!(
                                "{e}. Last checkpoint: {} in {}; start every node again with --resume",
                                last.unwrap_or_else(|| "none".into()),
                                checkpoint::dir(from).display()
                            ))
                        })?;
                (Some(grads), value)
            };
            if !value.is_finite() {
                pb.abandon();
                let last = checkpoint::latest(run, "epoch").map(|(k, _)| format!("after epoch {k}"));
                return Err(TrainError::Stopped(format!(
                    "the loss became {value} at epoch {} step {}; stopped. Last good checkpoint: {} in {}; best weights so far in best.safetensors. Lower the learning rate or check the data.",
                    epoch + 1,
                    it + 1,
                    last.unwrap_or_else(|| "none".into()),
                    checkpoint::dir(run).display()
                )));
            }
            losses.push(value);
            let lr = sched.at(epoch as f64 + it as f64 / per_epoch as f64);
            let grads = grads.unwrap_or_default();
            if ls.groups.is_uniform() {
                model = optim.step(lr, model, grads);
            } else {
                let (m, sets) = groups::split::<B, _>(model, grads, &depths, &ls.groups);
                model = m;
                for (scale, g) in sets {
                    model = optim.step(lr * scale, model, g);
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        // validation every `validate_every` epochs and after the last
        let v = ((epoch + 1).is_multiple_of(ls.validate_every.max(1)) || epoch + 1 == ls.epochs)
            .then(|| task.validate(&model.valid(), device));
        if !writer {
            // every node validates (so that none waits for rank 0's validation); rank 0 logs and keeps
            state.epoch = epoch + 1;
            continue;
        }
        let train_loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        let mut line = Map::new();
        line.insert("epoch".into(), json!(epoch + 1));
        line.insert("step".into(), json!((epoch + 1) * per_epoch));
        line.insert("loss".into(), json!(train_loss));
        line.insert("lr".into(), json!(sched.at(epoch as f64 + 1.0)));
        line.insert("images_per_s".into(), json!(n as f64 / secs));
        if let Some(v) = &v {
            line.extend(v.fields.clone());
            last_fields = Some((v.fields.clone(), epoch + 1));
        }
        run.append_json("metrics.jsonl", &Value::Object(line))?;
        let keep_now = match (ls.keep, &v) {
            (vismae_run::Keep::Last, Some(_)) => epoch + 1 == ls.epochs,
            (vismae_run::Keep::Best, Some(v)) => v.score > state.best_score || state.best_epoch == 0,
            (_, None) => false,
        };
        if let (true, Some(v)) = (keep_now, &v) {
            state.best_score = v.score;
            state.best_epoch = epoch + 1;
            state.best_fields = v.fields.clone();
            let (m, sd) = export_state_dict::<B, _>(model);
            model = m;
            write_weights(sd, &with_metrics(card, &v.fields, epoch + 1), &run.join("best.safetensors"))?;
        }
        state.epoch = epoch + 1;
        if state.epoch.is_multiple_of(ls.checkpoint_every.max(1)) || state.epoch == ls.epochs {
            checkpoint::save(run, "epoch", state.epoch, &model, &optim, &state, ls.keep_checkpoints)?;
        }
        let brief = v.as_ref().map_or_else(|| "not validated".to_string(), |v| v.brief.clone());
        pb.set_message(format!("loss {train_loss:.4}, {brief} (kept @ {})", state.best_epoch));
        pb.inc(1);
    }
    pb.finish_and_clear();
    if let Some(g) = own {
        g.finish();
    }
    if !writer {
        return Ok(LoopOutcome { best: (f64::NAN, 0, Map::new()), resumed_from });
    }
    let (_, sd) = export_state_dict::<B, _>(model);
    let last = last_fields.as_ref().map_or(card.clone(), |(f, e)| with_metrics(card, f, *e));
    write_weights(sd, &last, &run.join("final.safetensors"))?;
    Ok(LoopOutcome { best: (state.best_score, state.best_epoch, state.best_fields), resumed_from })
}

/// What a fine-tuning run did.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A segmentation run.
    Seg(seg::SegOutcome),
    /// A classification run.
    Cls(cls::ClsOutcome),
}

impl Outcome {
    /// The epoch the run resumed after, if it did.
    pub fn resumed_from(&self) -> Option<usize> {
        match self {
            Outcome::Seg(o) => o.resumed_from,
            Outcome::Cls(o) => o.resumed_from,
        }
    }

    /// Tensors applied from the initial weights.
    pub fn transferred(&self) -> usize {
        match self {
            Outcome::Seg(o) => o.transferred,
            Outcome::Cls(o) => o.transferred,
        }
    }
}

fn run_task<B: AutodiffBackend>(
    cfg: &FinetuneConfig,
    set: &vismae_data::labelled::LabelledSet,
    init: Option<&StateDict>,
    run: &RunDir,
    resume: bool,
    quiet: bool,
    par: &Parallel<B>,
) -> Result<Outcome> {
    Ok(match cfg.task {
        Task::Segmentation => Outcome::Seg(seg::run::<B>(cfg, set, init, run, resume, quiet, par)?),
        Task::Classification => Outcome::Cls(cls::run::<B>(cfg, set, init, run, resume, quiet, par)?),
    })
}

/// Creates the run folder `out` (new or empty), writes `config.json` and runs the resolved request.
pub fn start<B: AutodiffBackend>(resolved: &Resolved, out: &Path, device: &B::Device) -> Result<(RunDir, Outcome)> {
    start_quiet::<B>(resolved, out, false, device)
}

/// [`start`], without the progress bar when `quiet`, on `devices = N` replicas of `device`.
pub fn start_quiet<B: AutodiffBackend>(
    resolved: &Resolved,
    out: &Path,
    quiet: bool,
    device: &B::Device,
) -> Result<(RunDir, Outcome)> {
    let devices = vec![device.clone(); resolved.config.devices.max(1)];
    let (run, outcome) = start_on::<B>(resolved, out, devices, Nodes::Alone, quiet)?;
    Ok((run.ok_or_else(|| TrainError::invalid("no run folder"))?, outcome))
}

/// A hash of the settings every node of a run must share: the config without its data and
/// splits paths (nodes may mount them elsewhere; their contents are checked apart).
fn settings_hash(cfg: &FinetuneConfig) -> Result<blake3::Hash> {
    let mut shared = cfg.clone();
    shared.data = std::path::PathBuf::new();
    shared.splits = None;
    // the replicas are checked by their count
    shared.devices = 0;
    match &mut shared.settings {
        vismae_run::TaskSettings::Segmentation(s) => s.devices = 0,
        vismae_run::TaskSettings::Classification(s) => s.devices = 0,
    }
    crate::cluster::settings_hash(&shared)
}

/// A node other than rank 0 writes what a run writes into a scratch folder of its own, removed at the end.
fn scratch_run(rank: usize) -> Result<(std::path::PathBuf, RunDir)> {
    let dir = std::env::temp_dir().join(format!("vismae-node{rank}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok((dir.clone(), RunDir::create(&dir)?))
}

/// [`start`] as one node of a multi-node run (`nodes`; `None`: alone) on `devices`. Rank 0
/// creates `out` and alone writes to it; the other nodes return no run folder.
pub fn start_on<B: AutodiffBackend>(
    resolved: &Resolved,
    out: &Path,
    devices: Vec<B::Device>,
    nodes: Nodes<B>,
    quiet: bool,
) -> Result<(Option<RunDir>, Outcome)> {
    let cfg = &resolved.config;
    let par = Parallel::new(devices, nodes, settings_hash(cfg)?);
    let init = resolved.init.as_ref();
    match par.nodes.as_ref().filter(|t| !t.writes()) {
        Some(t) => {
            let (dir, run) = scratch_run(t.rank)?;
            let outcome = run_task::<B>(cfg, &resolved.set, init, &run, false, quiet, &par);
            drop(run);
            let _ = std::fs::remove_dir_all(dir);
            Ok((None, outcome?))
        }
        None => {
            let run = RunDir::create(out)?;
            cfg.write(&run)?;
            let outcome = run_task::<B>(cfg, &resolved.set, init, &run, false, quiet, &par)?;
            Ok((Some(run), outcome))
        }
    }
}

/// Continues the run in `dir` (which must be of `task`, when given) from its latest checkpoint.
pub fn resume<B: AutodiffBackend>(
    dir: &Path,
    task: Option<Task>,
    device: &B::Device,
) -> Result<(FinetuneConfig, RunDir, Outcome)> {
    resume_quiet::<B>(dir, task, false, device)
}

/// [`resume`], without the progress bar when `quiet`.
pub fn resume_quiet<B: AutodiffBackend>(
    dir: &Path,
    task: Option<Task>,
    quiet: bool,
    device: &B::Device,
) -> Result<(FinetuneConfig, RunDir, Outcome)> {
    resume_on::<B>(dir, task, |n| vec![device.clone(); n], Nodes::Alone, quiet)
}

/// [`resume`] as one node of a multi-node run (`nodes`; `None`: alone), with any number of
/// nodes; `devices(n)` gives the run's `n` replicas. Every node reads the run folder (a
/// filesystem they share); rank 0 alone writes to it.
pub fn resume_on<B: AutodiffBackend>(
    dir: &Path,
    task: Option<Task>,
    devices: impl FnOnce(usize) -> Vec<B::Device>,
    nodes: Nodes<B>,
    quiet: bool,
) -> Result<(FinetuneConfig, RunDir, Outcome)> {
    let writes = nodes.writes();
    let run = if writes { RunDir::open_existing(dir)? } else { RunDir::open_reader(dir)? };
    let cfg = FinetuneConfig::read(dir, task)?;
    let set = vismae_data::labelled::open(&cfg.data)?;
    let init = read_init(&cfg.init)?;
    let mut par = Parallel::new(devices(cfg.devices.max(1)), nodes, settings_hash(&cfg)?);
    let outcome = if writes {
        run_task::<B>(&cfg, &set, init.as_ref(), &run, true, quiet, &par)?
    } else {
        let rank = par.nodes.as_ref().map_or(0, |t| t.rank);
        par.checkpoints = Some(run.clone());
        let (scratch_dir, scratch) = scratch_run(rank)?;
        let outcome = run_task::<B>(&cfg, &set, init.as_ref(), &scratch, true, quiet, &par);
        drop(scratch);
        let _ = std::fs::remove_dir_all(scratch_dir);
        outcome?
    };
    Ok((cfg, run, outcome))
}
