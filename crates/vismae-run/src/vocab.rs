//! The closed sets of words vismae's commands, settings files and run folders use. Each is an
//! enum with serde names (what `config.json` and TOML files hold) and clap value names (what the
//! command line takes): a misspelt value is an error that lists the choices, never a default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// Lists the serde/clap names of a `ValueEnum`, for error messages.
fn choices<T: ValueEnum>() -> String {
    T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a `ValueEnum` by name or alias (case-insensitive), naming the choices when it fails.
pub fn parse_choice<T: ValueEnum>(what: &str, s: &str) -> Result<T, String> {
    <T as ValueEnum>::from_str(s, true).map_err(|_| format!("unknown {what} {s:?}: use {}", choices::<T>()))
}

macro_rules! display_from_value_enum {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let p = self.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default();
                f.write_str(&p)
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                parse_choice($what, s)
            }
        }
    };
}

/// A named model size. `vis-mae` is the paper's (Swin-T widths); `small` and `tiny` are narrower
/// for CPUs. The data here (widths, depths, heads) is all a variant is; the networks are built
/// from it in vismae-model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The paper's model: embed 96, heads 3/6/12/24 (Swin-T layout).
    #[serde(alias = "vismae", alias = "base")]
    #[value(alias = "vismae", alias = "base")]
    VisMae,
    /// Embed 48, heads 3/6/12/24: a quarter of the FLOPs, for laptops.
    Small,
    /// Embed 24, heads 3/6/12/24, 1 block per stage: for tests and the CPU demo.
    Tiny,
}
display_from_value_enum!(Variant, "variant");

impl Variant {
    /// All variants, in order of size.
    pub const ALL: [Variant; 3] = [Variant::Tiny, Variant::Small, Variant::VisMae];

    /// Parses a variant name (`vis-mae`, `small`, `tiny`); `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        <Self as ValueEnum>::from_str(name, true).ok()
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::VisMae => "vis-mae",
            Variant::Small => "small",
            Variant::Tiny => "tiny",
        }
    }

    /// Token width of the first stage.
    pub fn embed_dim(self) -> usize {
        match self {
            Variant::VisMae => 96,
            Variant::Small => 48,
            Variant::Tiny => 24,
        }
    }

    /// Attention heads per stage.
    pub fn num_heads(self) -> Vec<usize> {
        vec![3, 6, 12, 24]
    }

    /// Encoder depths used for pre-training and classification (2,2,2,2; tiny 1,1,1,1).
    pub fn mae_depths(self) -> Vec<usize> {
        match self {
            Variant::Tiny => vec![1, 1, 1, 1],
            _ => vec![2, 2, 2, 2],
        }
    }

    /// Encoder depths used for segmentation (2,2,6,2; tiny 1,1,2,1).
    pub fn seg_depths(self) -> Vec<usize> {
        match self {
            Variant::Tiny => vec![1, 1, 2, 1],
            _ => vec![2, 2, 6, 2],
        }
    }
}

/// What a fine-tuned network does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Swin-UNet label maps.
    #[serde(alias = "seg")]
    #[value(alias = "seg")]
    Segmentation,
    /// Swin classifier labels (multi-class or multi-label).
    #[serde(alias = "cls")]
    #[value(alias = "cls")]
    Classification,
}
display_from_value_enum!(Task, "task");

/// The three networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Window-masked Swin MAE (`decoder_pred.*`).
    Mae,
    /// Swin-UNet (`skip_connection_layers.*`).
    Unet,
    /// Swin classifier (`head.*` after `norm.*`).
    Classifier,
    /// A Swin encoder with its final norm and a SimCLR projection head (`projection.*`).
    Encoder,
}
display_from_value_enum!(ModelKind, "model kind");

/// How a pre-training run learns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Window-masked autoencoding (VIS-MAE, SPEC §2).
    #[default]
    Mae,
    /// Contrastive learning of two augmented views (SimCLR, the paper's baseline).
    Simclr,
}
display_from_value_enum!(Method, "method");

/// Where a fine-tuning run's weights start: random initialisation, or a weights file.
/// Serialised as the string `scratch` or the file's path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Init {
    /// Random initialisation.
    Scratch,
    /// A weights file (.safetensors, .pth or .mpk).
    Weights(PathBuf),
}

impl From<String> for Init {
    fn from(s: String) -> Self {
        if s.trim().eq_ignore_ascii_case("scratch") { Init::Scratch } else { Init::Weights(PathBuf::from(s)) }
    }
}

impl From<Init> for String {
    fn from(i: Init) -> String {
        i.to_string()
    }
}

impl FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("the initialisation is empty: give a weights file or `scratch`".into());
        }
        Ok(Init::from(s.to_string()))
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Scratch => f.write_str("scratch"),
            Init::Weights(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Init {
    /// The weights file, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Init::Scratch => None,
            Init::Weights(p) => Some(p),
        }
    }
}

/// How the Swin-UNet decoder starts from MAE weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DecoderInit {
    /// The MAE decoder's `layers_up.*` by name, as VIS-MAE loads it (`misc.load_model`).
    #[default]
    Mae,
    /// Encoder `layers.{i}.blocks.*` copied to `layers_up.{n-2-i}.blocks.*` (Swin-MAE issue #8,
    /// Swin-Unet's `load_from`).
    Mirrored,
    /// Decoder left at initialisation (`misc_update.load_model`).
    Scratch,
}
display_from_value_enum!(DecoderInit, "decoder init");

/// Which training-time augmentation a fine-tuning run draws.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    /// The official code's pipeline (SPEC §7).
    #[default]
    Reference,
    /// Only the geometric flips: rot90 + flip (segmentation) or horizontal flip (classification).
    Flip,
    /// None.
    None,
}
display_from_value_enum!(Augment, "augmentation");

/// Test-time augmentation of segmentation prediction: softmax probabilities averaged over
/// mirrorings of each image, each prediction mirrored back (nnU-Net's mirroring, in 2-D).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// One pass.
    #[default]
    Off,
    /// The image and its left-right mirror.
    Lr,
    /// The four mirrorings: none, left-right, up-down, both.
    All,
}
display_from_value_enum!(Tta, "test-time augmentation");

impl Tta {
    /// The default for a run trained with `augment`: the left-right mirror when training mirrored
    /// its images (`reference`, `flip`), else none. nnU-Net mirrors at inference along every axis
    /// it mirrored in training; on axial brain slabs (Colin27 + AAL, README) the up-down mirror, an
    /// anterior-posterior flip, lowered foreground Dice from 0.45 to 0.37 while the left-right one
    /// raised it to 0.46, so `all` is a choice, not the default.
    pub fn for_training(augment: Augment) -> Tta {
        if augment == Augment::None { Tta::Off } else { Tta::Lr }
    }
}

/// How a segmentation run meets images whose size is not its input side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SegInput {
    /// Each image (slice) resized to the side, predicted, and the labels resized back (the
    /// reference's way).
    #[default]
    Resize,
    /// Images kept at their own resolution: training on random patches of the side (a share of
    /// them centred on foreground, as nnU-Net samples), prediction by a sliding window with
    /// Gaussian importance weighting.
    Patch,
}
display_from_value_enum!(SegInput, "segmentation input");

/// Which epoch's weights a fine-tuning run keeps (`best.safetensors`, what `predict` uses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The epoch with the best validation score.
    #[default]
    Best,
    /// The last epoch.
    Last,
}
display_from_value_enum!(Keep, "keep");

/// What a split keeps together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The cases of one patient (when the layout knows it; else each case alone).
    #[default]
    Patient,
    /// Every case alone.
    Case,
    /// The cases of one patient and near-duplicate images (equal 8 x 8 difference hash of the
    /// middle image) together: for sets without patient ids.
    Similar,
}
display_from_value_enum!(GroupBy, "grouping");

/// A slicing plane of volumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Slices of constant z; rows run along y (flipped), columns along x.
    #[default]
    Axial,
    /// Slices of constant y; rows run along z (flipped), columns along x.
    Coronal,
    /// Slices of constant x; rows run along z (flipped), columns along y.
    Sagittal,
}
display_from_value_enum!(Plane, "plane");

/// How values are brought to `[0, 1]` when no usable window exists. Serialised by variant name
/// (`MinMax`, `Percentile`), as dataset manifests have always recorded it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum)]
pub enum Fallback {
    /// `(x - min) / (max - min)` (a constant image becomes 0).
    #[default]
    #[serde(alias = "minmax", alias = "min_max")]
    #[value(name = "minmax", alias = "min-max")]
    MinMax,
    /// Clip to the 0.5th and 99.5th percentiles, then min-max.
    #[serde(alias = "percentile")]
    #[value(name = "percentile", alias = "percentiles")]
    Percentile,
}
display_from_value_enum!(Fallback, "fallback");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_typos_list_the_choices() {
        for v in Variant::ALL {
            assert_eq!(v.to_string().parse::<Variant>(), Ok(v));
            assert_eq!(serde_json::to_value(v).ok(), Some(serde_json::json!(v.name())));
        }
        assert_eq!("VISMAE".parse::<Variant>(), Ok(Variant::VisMae));
        let err = "tniy".parse::<Variant>().unwrap_err();
        assert!(err.contains("tiny") && err.contains("vis-mae") && err.contains("tniy"), "{err}");
        assert!("nearest".parse::<Augment>().unwrap_err().contains("reference, flip, none"));
        assert_eq!("seg".parse::<Task>(), Ok(Task::Segmentation));
        assert_eq!(serde_json::from_str::<Fallback>("\"MinMax\"").ok(), Some(Fallback::MinMax));
        assert_eq!(serde_json::to_string(&Fallback::Percentile).ok().as_deref(), Some("\"Percentile\""));
    }

    #[test]
    fn init_is_scratch_or_a_path() {
        assert_eq!("Scratch".parse::<Init>(), Ok(Init::Scratch));
        let w: Init = "runs/mae/weights.safetensors".parse().unwrap_or(Init::Scratch);
        assert_eq!(w.path(), Some(Path::new("runs/mae/weights.safetensors")));
        assert_eq!(serde_json::to_string(&w).ok().as_deref(), Some("\"runs/mae/weights.safetensors\""));
        assert!("".parse::<Init>().is_err());
    }
}
