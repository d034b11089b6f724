//! Resolution of a fine-tuning request, once, before the run folder exists: the settings
//! (defaults, `--config`, `--set`, flags), the labelled set, the fold's training and validation
//! cases at the label fraction, the initial weights (read once, with what their card says), the
//! preprocessing the network will see, and the warm-up. Everything that cannot work is an error
//! here; what is allowed but questionable is a warning the caller prints.

use std::path::{Path, PathBuf};

use vismae_data::labelled::{LabelledSet, Target};
use vismae_data::splits::{Fold, Item, grouped_kfold, read_splits};
use vismae_model::weights::{ModelKind, StateDict, detect, read_state_dict, swin_import};
use vismae_run::schema::default_init_name;
use vismae_run::settings::{Overrides, resolve_warmup};
use vismae_run::{
    Channels, ClsSettings, FinetuneConfig, Init, InputNorm, Intensity, Preprocess, SCHEMA, SegSettings, Task,
    TaskSettings, VISMAE_VERSION,
};

use crate::error::{Result, TrainError};

/// What the user asked for.
#[derive(Clone, Debug)]
pub struct FinetuneRequest {
    /// Segmentation or classification.
    pub task: Task,
    /// The labelled set.
    pub data: PathBuf,
    /// Initial weights.
    pub init: Init,
    /// A name for the initialisation in reports (default: the weights' card, else derived).
    pub init_name: Option<String>,
    /// A splits file from `vismae split`; without one the folds are made here.
    pub splits: Option<PathBuf>,
    /// Folds when no splits file is given.
    pub folds: usize,
    /// The fold to train.
    pub fold: usize,
    /// Fraction of the fold's training cases.
    pub fraction: f64,
    /// Held-out test cases kept out of training and validation (recorded in the config).
    pub test_cases: Vec<String>,
    /// Where the settings come from.
    pub settings: SettingsFrom,
}

/// Where a fine-tuning run's settings come from.
#[derive(Clone, Debug)]
pub enum SettingsFrom {
    /// A settings file, `--set` and the common flags, over the task's defaults.
    User(Overrides),
    /// Settings built by a program (the demo, the study).
    Given(TaskSettings),
}

/// A resolved request: the config to write, the labelled set and initial weights (read once),
/// and warnings for the user.
#[derive(Debug)]
pub struct Resolved {
    /// The complete config.
    pub config: FinetuneConfig,
    /// The labelled set.
    pub set: LabelledSet,
    /// The initial weights, when not scratch.
    pub init: Option<StateDict>,
    /// Things the user should know (printed before the run).
    pub warnings: Vec<String>,
}

/// Reads initial weights in the VIS-MAE layout: an MAE (its encoder, and for segmentation its
/// decoder), a SimCLR encoder, or a classifier (supervised Swin-T weights in Microsoft's or timm's
/// layout are converted on reading, with a card).
pub fn read_init(init: &Init) -> Result<Option<StateDict>> {
    let Some(path) = init.path() else { return Ok(None) };
    let (mut sd, layout) = swin_import::to_vismae(read_state_dict(path)?);
    if layout != swin_import::SwinLayout::Vismae
        && let Some(mut card) = sd.card()
        && let vismae_run::Origin::Imported { source, .. } = &mut card.origin
    {
        *source = path.display().to_string();
        sd.set_card(&card);
    }
    let info = detect(&sd).map_err(|e| TrainError::invalid(format!("{}: {e}", path.display())))?;
    if info.kind == ModelKind::Unet {
        return Err(TrainError::invalid(format!(
            "{} holds a unet model (a fine-tuned Swin-UNet); fine-tuning starts from MAE or SimCLR weights, a Swin classifier (ImageNet), or scratch",
            path.display()
        )));
    }
    Ok(Some(sd))
}

/// The kind of network initial weights hold.
pub fn init_kind(sd: &StateDict) -> Option<ModelKind> {
    detect(sd).ok().map(|i| i.kind)
}

/// The fold's (training at `fraction`, validation) case ids: from `splits` when given, else made
/// here (grouped by patient, stratified by class for classification) over the cases that are not
/// held out.
#[allow(clippy::too_many_arguments)]
fn fold_cases(
    set: &LabelledSet,
    splits: Option<&Path>,
    folds: usize,
    fold: usize,
    fraction: f64,
    seed: u64,
    held_out: &[String],
) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let all: Vec<Fold> = match splits {
        Some(p) => read_splits(p)?,
        None => {
            let items: Vec<Item> = set
                .samples
                .iter()
                .filter(|s| !held_out.contains(&s.id))
                .map(|s| Item {
                    id: s.id.clone(),
                    group: s.group.clone(),
                    class: match &s.target {
                        Target::Class(c) => Some(*c),
                        _ => None,
                    },
                })
                .collect();
            grouped_kfold(&items, folds, seed, &[fraction])?
        }
    };
    let f = all
        .get(fold)
        .ok_or_else(|| TrainError::invalid(format!("fold {fold} does not exist ({} folds)", all.len())))?;
    let train = f.train_at(fraction).ok_or_else(|| {
        TrainError::invalid(format!("fraction {fraction} is not in the splits (have {:?})", f.fraction_values()))
    })?;
    let known: std::collections::HashSet<&str> = set.samples.iter().map(|s| s.id.as_str()).collect();
    if let Some(missing) = train.iter().chain(&f.val).find(|id| !known.contains(id.as_str())) {
        return Err(TrainError::invalid(format!(
            "case {missing:?} of the splits is not in the labelled set {}",
            splits.map(|p| p.display().to_string()).unwrap_or_default()
        )));
    }
    let test: Vec<String> = if held_out.is_empty() { f.test.clone() } else { held_out.to_vec() };
    if let Some(leak) = train.iter().chain(&f.val).find(|id| test.contains(id)) {
        return Err(TrainError::invalid(format!(
            "case {leak:?} is held out for testing but the splits train or validate on it"
        )));
    }
    Ok((train.to_vec(), f.val.clone(), test))
}

/// What the network sees: the settings' choices, else the task's reference defaults (grey
/// replicated to 3 channels, or one channel per image file when cases have several; stored
/// values and min-max for segmentation, the format's rules and no normalisation for
/// classification).
#[allow(clippy::too_many_arguments)]
fn preprocess(
    task: Task,
    size: usize,
    in_chans: Option<usize>,
    channels: Option<Channels>,
    intensity: Option<Intensity>,
    norm: Option<InputNorm>,
    card_norm: Option<InputNorm>,
    files: usize,
) -> Result<Preprocess> {
    let norm = norm.or(card_norm);
    let channels = channels.unwrap_or(if files > 1 { Channels::Stack } else { Channels::Grey });
    let in_chans = in_chans.unwrap_or(match channels {
        Channels::Stack if files > 1 => files,
        _ => 3,
    });
    let (intensity, norm) = match task {
        Task::Segmentation => (intensity.unwrap_or(Intensity::Stored), norm.unwrap_or(InputNorm::MinMax)),
        Task::Classification => (intensity.unwrap_or_default(), norm.unwrap_or(InputNorm::None)),
    };
    let spec = Preprocess { size, in_chans, channels, intensity, norm };
    spec.check(files)
        .map_err(|e| TrainError::invalid(format!("the labelled set has {files} image file(s) per case: {e}")))?;
    Ok(spec)
}

/// Resolves a fine-tuning request.
pub fn resolve(req: &FinetuneRequest) -> Result<Resolved> {
    let settings = match (&req.settings, req.task) {
        (SettingsFrom::User(o), Task::Segmentation) => TaskSettings::Segmentation(o.settings::<SegSettings>()?),
        (SettingsFrom::User(o), Task::Classification) => TaskSettings::Classification(o.settings::<ClsSettings>()?),
        (SettingsFrom::Given(s), t) if s.task() == t => s.clone(),
        (SettingsFrom::Given(s), t) => {
            return Err(TrainError::invalid(format!("{} settings given for a {t} run", s.task())));
        }
    };
    let mut warnings = Vec::new();
    let set = vismae_data::labelled::open(&req.data)?;
    match (req.task, set.segmentation) {
        (Task::Segmentation, false) => {
            return Err(TrainError::invalid(format!(
                "{} holds class labels, not masks: use `finetune cls`",
                req.data.display()
            )));
        }
        (Task::Classification, true) => {
            return Err(TrainError::invalid(format!(
                "{} holds masks, not class labels: use `finetune seg`",
                req.data.display()
            )));
        }
        _ => {}
    }
    let (size, epochs, seed, devices, warmup, reference) = match &settings {
        TaskSettings::Segmentation(s) => {
            (s.size, s.epochs, s.seed, s.devices, s.warmup_epochs, SegSettings::REFERENCE_WARMUP)
        }
        TaskSettings::Classification(s) => {
            (s.size, s.epochs, s.seed, s.devices, s.warmup_epochs, ClsSettings::REFERENCE_WARMUP)
        }
    };
    if epochs == 0 {
        return Err(TrainError::invalid("epochs must be at least 1"));
    }
    let (enc_scale, decay) = match &settings {
        TaskSettings::Segmentation(s) => (s.encoder_lr_scale, s.layer_decay),
        TaskSettings::Classification(s) => (s.encoder_lr_scale, s.layer_decay),
    };
    if !(enc_scale.is_finite() && enc_scale > 0.0) {
        return Err(TrainError::invalid(format!(
            "encoder_lr_scale = {enc_scale}: it must be > 0 (freeze_encoder = true leaves the encoder as initialised)"
        )));
    }
    if !(decay > 0.0 && decay <= 1.0) {
        return Err(TrainError::invalid(format!("layer_decay = {decay}: it must be in (0, 1] (1: no decay)")));
    }
    if !(req.fraction > 0.0 && req.fraction <= 1.0) {
        return Err(TrainError::invalid(format!("fraction {} must be in (0, 1]", req.fraction)));
    }
    if devices == 0 {
        return Err(TrainError::invalid("devices = 0: fine-tuning needs at least one replica"));
    }
    let (warmup_epochs, derived) = resolve_warmup(warmup, epochs as f64, reference)?;
    if derived {
        warnings.push(format!(
            "warm-up: {warmup_epochs:.2} epochs ({} of {} epochs in the paper's recipe, scaled to this run's {epochs}); set warmup_epochs to choose",
            reference.0, reference.1
        ));
    }
    let (train_cases, val_cases, test_cases) =
        fold_cases(&set, req.splits.as_deref(), req.folds, req.fold, req.fraction, seed, &req.test_cases)?;
    if train_cases.is_empty() || val_cases.is_empty() {
        return Err(TrainError::invalid(format!(
            "fold {} has {} training and {} validation case(s) at fraction {}: both must be non-empty",
            req.fold,
            train_cases.len(),
            val_cases.len(),
            req.fraction
        )));
    }
    let files = set.channels();
    if !size.is_multiple_of(4) || size < 32 {
        return Err(TrainError::invalid(format!("size {size} must be a multiple of 4 and at least 32")));
    }
    if let TaskSettings::Segmentation(s) = &settings {
        if !(0.0..1.0).contains(&s.overlap) {
            return Err(TrainError::invalid(format!("overlap {} must be at least 0 and below 1", s.overlap)));
        }
        if !(0.0..=1.0).contains(&s.foreground_oversample) {
            return Err(TrainError::invalid(format!(
                "foreground_oversample {} must be between 0 and 1",
                s.foreground_oversample
            )));
        }
    }
    let init = read_init(&req.init)?;
    let card = init.as_ref().and_then(StateDict::card);
    // the input the initial weights want: pre-trained encoders their pre-training input (the
    // preprocessing travels with the weights), imported ones what their card asks
    let pretrained = card.as_ref().filter(|c| matches!(c.origin, vismae_run::card::Origin::Pretrained { .. }));
    let card_norm =
        card.as_ref().and_then(|c| c.finetune_norm.clone()).or(pretrained.map(|c| c.preprocess.norm.clone()));
    let card_intensity = pretrained.map(|c| c.preprocess.intensity.clone());
    let (given_norm, given_eps) = match &settings {
        TaskSettings::Segmentation(s) => (s.norm.clone(), s.layer_norm_eps),
        TaskSettings::Classification(s) => (s.norm.clone(), s.layer_norm_eps),
    };
    if given_norm.is_none()
        && let Some(n) = &card_norm
    {
        warnings
            .push(format!("input: normalised as {}, as the initial weights want (set norm to choose)", n.describe()));
    }
    let layer_norm_eps = given_eps.or(card.as_ref().and_then(|c| c.layer_norm_eps)).unwrap_or(1e-6);
    if given_eps.is_none() && layer_norm_eps != 1e-6 {
        warnings.push(format!("LayerNorm eps {layer_norm_eps:e}, as the initial weights were trained (VIS-MAE: 1e-6)"));
    }
    let spec = match &settings {
        TaskSettings::Segmentation(s) => {
            let intensity = s.intensity.clone().or(card_intensity.clone());
            preprocess(req.task, s.size, s.in_chans, s.channels, intensity, s.norm.clone(), card_norm, files)?
        }
        TaskSettings::Classification(s) => {
            let intensity = s.intensity.clone().or(card_intensity.clone());
            preprocess(req.task, s.size, s.in_chans, s.channels, intensity, s.norm.clone(), card_norm, files)?
        }
    };
    if let (Task::Segmentation, Some(kind)) = (req.task, init.as_ref().and_then(init_kind))
        && kind != ModelKind::Mae
        && let TaskSettings::Segmentation(s) = &settings
        && s.decoder_init == vismae_run::DecoderInit::Mae
    {
        warnings.push(format!(
            "the initial weights ({kind}) have no decoder: it starts at initialisation (decoder_init = \"mirrored\" copies the encoder stages into it)"
        ));
    }
    let encoder_preprocess = card.as_ref().map(|c| c.preprocess.clone());
    if let Some(enc) = &encoder_preprocess
        && enc.norm != spec.norm
    {
        warnings.push(format!(
            "the initial weights were pre-trained on inputs normalised as {}; this run feeds {} (set norm to match them)",
            enc.norm.describe(),
            spec.norm.describe()
        ));
    }
    let init_name = req
        .init_name
        .clone()
        .or_else(|| card.as_ref().map(|c| c.name.clone()))
        .unwrap_or_else(|| default_init_name(&req.init));
    let init = match (&req.init, init) {
        (Init::Weights(p), sd) => (Init::Weights(std::path::absolute(p).unwrap_or_else(|_| p.clone())), sd),
        (Init::Scratch, _) => (Init::Scratch, None),
    };
    let config = FinetuneConfig {
        schema: SCHEMA,
        vismae: VISMAE_VERSION.into(),
        task: req.task,
        data: std::path::absolute(&req.data).unwrap_or_else(|_| req.data.clone()),
        init: init.0,
        init_name,
        fold: req.fold,
        fraction: req.fraction,
        splits: req.splits.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
        train_cases,
        val_cases,
        test_cases,
        classes: set.classes.clone(),
        multi_label: Some(req.task == Task::Classification && set.multi_label),
        settings,
        preprocess: spec,
        encoder_preprocess,
        warmup_epochs,
        devices,
        layer_norm_eps,
    };
    Ok(Resolved { config, set, init: init.1, warnings })
}

/// The resolved run in a few lines, printed before the first epoch.
pub fn describe(cfg: &FinetuneConfig) -> String {
    let (lr, batch) = match &cfg.settings {
        TaskSettings::Segmentation(s) => (s.lr, s.batch_size),
        TaskSettings::Classification(s) => (s.lr, s.batch_size),
    };
    format!(
        "fine-tuning a {} {} from {} ({}): fold {}, {:.0} % of its training cases ({} train, {} validation cases)\n  {} epochs, warm-up {:.2}, batch {batch}, lr {lr:.1e}\n  input: {}",
        cfg.variant(),
        match cfg.task {
            Task::Segmentation => "Swin-UNet",
            Task::Classification => "Swin classifier",
        },
        cfg.init_name,
        cfg.init,
        cfg.fold,
        cfg.fraction * 100.0,
        cfg.train_cases.len(),
        cfg.val_cases.len(),
        cfg.epochs(),
        cfg.warmup_epochs,
        match cfg.seg() {
            Some(s) if s.input == vismae_run::SegInput::Patch => format!(
                "{}\n  patches of {n}x{n} at the images' own resolution ({:.0} % centred on foreground), normalised over each whole slice; validation and prediction by a sliding window (overlap {}, {} weights)",
                cfg.preprocess.describe().replace(&format!(", resized to {0}x{0}", cfg.preprocess.size), ""),
                s.foreground_oversample * 100.0,
                s.overlap,
                if s.gaussian { "Gaussian" } else { "even" },
                n = cfg.preprocess.size
            ),
            _ => cfg.preprocess.describe(),
        }
    )
}
