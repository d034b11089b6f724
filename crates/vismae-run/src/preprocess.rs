//! What a network sees, as one value that travels with its weights (timm's `pretrained_cfg`
//! idea): how a case's images become channels, how stored values become intensities, the input
//! side, the input channels, and the per-image normalisation. Every path that feeds a network
//! (pre-training, fine-tuning, validation, prediction, reconstruction) goes through it, in this
//! order:
//!
//! 1. each image file of the case is read, and its values are kept as stored (HU for CT) or
//!    brought to `[0, 1]` by the format's rules ([`Intensity`]);
//! 2. [`Channels`] turns them into planes: grey by BT.601 luma, colour kept, or one plane per file
//!    of the case (nnU-Net channels);
//! 3. each plane is resized to `size x size` (PIL's antialiased bilinear);
//! 4. (training only) augmentation, the same draw for every plane;
//! 5. [`Preprocess::finish`]: planes replicated to (or averaged into) `in_chans`, then
//!    [`InputNorm`] over the whole image.
//!
//! Steps 1-3 need the file readers and live in `vismae_data::prep`; step 5 is here.

use serde::{Deserialize, Serialize};

use crate::vocab::Fallback;

/// How a case's images become the planes of the network input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// One grey plane (colour by BT.601 luma), replicated to `in_chans` (the official code's
    /// `convert("RGB")` of grey images when `in_chans` is 3).
    #[default]
    Grey,
    /// Colour kept as 3 planes (grey images replicated).
    Colour,
    /// One grey plane per image file of the case, in channel order (nnU-Net's `_0000`, `_0001`,
    /// ...): `in_chans` equals the number of files.
    Stack,
}

/// How a file's stored values become the intensities that are normalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intensity {
    /// Values as stored, after the modality rescale (HU for CT): the segmentation reference, which
    /// min-max normalises each image itself.
    Stored,
    /// `[0, 1]` by the format's rules: a given window, else the DICOM header's window, else the
    /// 8/16-bit type range, else the fallback (what `ingest` and `convert` do; the classification
    /// reference's `ToTensor()` of 8-bit images is the type range).
    Rules {
        /// A window `[center, width]` that overrides the header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<[f64; 2]>,
        /// Normalisation without a usable window.
        #[serde(default)]
        fallback: Fallback,
    },
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity::Rules { window: None, fallback: Fallback::MinMax }
    }
}

/// The per-image normalisation of the network input, applied after resizing and augmentation.
///
/// Serialised as a tagged table (`{kind = "mean_std", mean = 0.223, std = 0.202}`); settings may
/// also name one by a word: `none`, `minmax`, `meanstd` (the reference's 0.223 / 0.202) or
/// `imagenet` (timm's per-channel ImageNet statistics).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputNorm {
    /// Values as they are (the classification reference feeds `ToTensor()`'s `[0, 1]`).
    None,
    /// Per image, over all channels: `(x - min + 1e-6) / (max - min + 1e-6)` (the segmentation
    /// reference).
    MinMax,
    /// `(x - mean) / std` with scalar statistics (the pre-training reference: 0.223 / 0.202).
    MeanStd {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `(x_c - mean_c) / std_c` per channel (supervised ImageNet weights expect these).
    PerChannel {
        /// Means, one per input channel.
        mean: Vec<f64>,
        /// Standard deviations, one per input channel.
        std: Vec<f64>,
    },
}

impl InputNorm {
    /// The pre-training reference: `Normalize(0.223, 0.202)` on every channel.
    pub const REFERENCE_MEAN_STD: InputNorm = InputNorm::MeanStd { mean: 0.223, std: 0.202 };

    /// timm's ImageNet statistics.
    pub fn imagenet() -> InputNorm {
        InputNorm::PerChannel { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// A short description, e.g. `mean_std(0.223, 0.202)`.
    pub fn describe(&self) -> String {
        match self {
            InputNorm::None => "none ([0, 1] as read)".into(),
            InputNorm::MinMax => "per-image min-max".into(),
            InputNorm::MeanStd { mean, std } => format!("(x - {mean}) / {std}"),
            InputNorm::PerChannel { mean, std } => format!("per channel (x - {mean:?}) / {std:?}"),
        }
    }

    /// Normalises one image of `channels` planes (`data.len() = channels * pixels`) in place.
    pub fn apply(&self, data: &mut [f32], channels: usize) {
        match self {
            InputNorm::None => {}
            InputNorm::MinMax => {
                let (lo, hi) = data.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
                data.iter_mut().for_each(|x| *x = (*x - lo + 1e-6) / (hi - lo + 1e-6));
            }
            InputNorm::MeanStd { mean, std } => {
                let (m, s) = (*mean as f32, *std as f32);
                data.iter_mut().for_each(|x| *x = (*x - m) / s);
            }
            InputNorm::PerChannel { mean, std } => {
                let pixels = data.len() / channels.max(1);
                for (c, plane) in data.chunks_mut(pixels.max(1)).enumerate() {
                    let (m, s) = (mean[c % mean.len()] as f32, std[c % std.len()] as f32);
                    plane.iter_mut().for_each(|x| *x = (*x - m) / s);
                }
            }
        }
    }

    /// Brings normalised values back to `[0, 1]` for display (`None` when that needs the image's
    /// own range, as min-max does).
    pub fn invert(&self, v: f32, channel: usize) -> Option<f32> {
        match self {
            InputNorm::None | InputNorm::MinMax => Some(v),
            InputNorm::MeanStd { mean, std } => Some((v as f64 * std + mean) as f32),
            InputNorm::PerChannel { mean, std } => {
                Some((v as f64 * std[channel % std.len()] + mean[channel % mean.len()]) as f32)
            }
        }
    }
}

/// The words and tables `InputNorm` settings accept.
#[derive(Deserialize)]
#[serde(untagged)]
enum InputNormRepr {
    Word(String),
    Table(TaggedInputNorm),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum TaggedInputNorm {
    None,
    MinMax,
    MeanStd { mean: f64, std: f64 },
    PerChannel { mean: Vec<f64>, std: Vec<f64> },
}

impl<'de> Deserialize<'de> for InputNorm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match InputNormRepr::deserialize(d)? {
            InputNormRepr::Word(w) => w.parse().map_err(serde::de::Error::custom),
            InputNormRepr::Table(t) => Ok(match t {
                TaggedInputNorm::None => InputNorm::None,
                TaggedInputNorm::MinMax => InputNorm::MinMax,
                TaggedInputNorm::MeanStd { mean, std } => InputNorm::MeanStd { mean, std },
                TaggedInputNorm::PerChannel { mean, std } => InputNorm::PerChannel { mean, std },
            }),
        }
    }
}

impl std::str::FromStr for InputNorm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "none" => Ok(InputNorm::None),
            "minmax" => Ok(InputNorm::MinMax),
            "meanstd" => Ok(InputNorm::REFERENCE_MEAN_STD),
            "imagenet" => Ok(InputNorm::imagenet()),
            _ => Err(format!(
                "input normalisation {s:?}: use none, minmax, meanstd (0.223/0.202), imagenet, or a table such as {{kind = \"mean_std\", mean = 0.5, std = 0.25}}"
            )),
        }
    }
}

/// What a network sees (see the module text for the order of the steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Network input side in pixels (images are resized to `size x size`).
    pub size: usize,
    /// Network input channels.
    pub in_chans: usize,
    /// How a case's images become planes.
    pub channels: Channels,
    /// How stored values become intensities.
    pub intensity: Intensity,
    /// Per-image normalisation after resizing and augmentation.
    pub norm: InputNorm,
}

impl Preprocess {
    /// Planes a prepared image has before [`Self::finish`] (1 for grey, 3 for colour, the files
    /// of a case for stacks).
    pub fn planes(&self, files: usize) -> usize {
        match self.channels {
            Channels::Grey => 1,
            Channels::Colour => 3,
            Channels::Stack => files,
        }
    }

    /// Checks that the spec can be applied to cases of `files` image files.
    pub fn check(&self, files: usize) -> Result<(), String> {
        if self.size < 16 || !self.size.is_multiple_of(4) {
            return Err(format!("input size {} must be a multiple of 4 and at least 16", self.size));
        }
        let planes = self.planes(files);
        let fits =
            self.in_chans == planes || (planes == 1 && self.in_chans >= 1) || (planes == 3 && self.in_chans == 1);
        if !fits {
            return Err(format!(
                "{} input channel(s) cannot be fed from {planes} plane(s) ({:?} channels of {files} file(s) per case)",
                self.in_chans, self.channels
            ));
        }
        if let InputNorm::PerChannel { mean, std } = &self.norm
            && (mean.len() != std.len() || mean.is_empty())
        {
            return Err(format!(
                "per-channel normalisation needs as many means as standard deviations ({mean:?}, {std:?})"
            ));
        }
        Ok(())
    }

    /// Step 5: `planes` planar planes of `size * size` values (after any augmentation) become the
    /// network input of `in_chans` planes: one plane is replicated, three planes feeding one
    /// channel are averaged; then the normalisation is applied over the whole image.
    pub fn finish(&self, data: Vec<f32>, planes: usize) -> Vec<f32> {
        self.finish_px(data, planes, self.size * self.size)
    }

    /// [`Preprocess::finish`] of an image of `px` pixels (not the input side squared): a whole
    /// slice at its own resolution, before patches are cut from it.
    pub fn finish_px(&self, mut data: Vec<f32>, planes: usize, px: usize) -> Vec<f32> {
        if planes != self.in_chans {
            if planes == 1 {
                data = data.repeat(self.in_chans);
            } else if self.in_chans == 1 {
                let mut mean = vec![0f32; px];
                for plane in data.chunks(px) {
                    mean.iter_mut().zip(plane).for_each(|(m, v)| *m += v);
                }
                let k = planes as f32;
                mean.iter_mut().for_each(|m| *m /= k);
                data = mean;
            }
        }
        self.norm.apply(&mut data, self.in_chans);
        data
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        let intensity = match &self.intensity {
            Intensity::Stored => "stored values".to_string(),
            Intensity::Rules { window: Some([c, w]), .. } => format!("window {c}/{w} to [0, 1]"),
            Intensity::Rules { fallback, .. } => format!("[0, 1] by the format's rules (else {fallback})"),
        };
        format!(
            "{intensity}, {:?} channels -> {} input channel(s), resized to {}x{}, then {}",
            self.channels,
            self.in_chans,
            self.size,
            self.size,
            self.norm.describe()
        )
        .replace("Grey", "grey")
        .replace("Colour", "colour")
        .replace("Stack", "stacked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_parse_from_words_and_tables() {
        let t: toml::Table =
            toml::from_str("a = \"minmax\"\nb = { kind = \"mean_std\", mean = 0.5, std = 0.25 }\nc = \"imagenet\"")
                .unwrap();
        let a: InputNorm = t["a"].clone().try_into().unwrap();
        let b: InputNorm = t["b"].clone().try_into().unwrap();
        let c: InputNorm = t["c"].clone().try_into().unwrap();
        assert_eq!(a, InputNorm::MinMax);
        assert_eq!(b, InputNorm::MeanStd { mean: 0.5, std: 0.25 });
        assert_eq!(c, InputNorm::imagenet());
        // the tagged form is what config.json has always held
        let j = serde_json::to_value(InputNorm::REFERENCE_MEAN_STD).unwrap();
        assert_eq!(j, serde_json::json!({"kind": "mean_std", "mean": 0.223, "std": 0.202}));
        assert_eq!(serde_json::from_value::<InputNorm>(j).unwrap(), InputNorm::REFERENCE_MEAN_STD);
        assert!(serde_json::from_str::<InputNorm>("\"zscore\"").unwrap_err().to_string().contains("minmax"));
    }

    #[test]
    fn finish_replicates_then_normalises() {
        let spec = Preprocess {
            size: 16,
            in_chans: 3,
            channels: Channels::Grey,
            intensity: Intensity::Stored,
            norm: InputNorm::MinMax,
        };
        let plane: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let out = spec.finish(plane, 1);
        assert_eq!(out.len(), 3 * 256);
        assert!((out[0] - 1e-6 / (255.0 + 1e-6)).abs() < 1e-9 && (out[255] - 1.0).abs() < 1e-6);
        assert_eq!(&out[..256], &out[512..]);
        let imagenet = Preprocess { norm: InputNorm::imagenet(), ..spec.clone() };
        let out = imagenet.finish(vec![0.5; 256], 1);
        assert!((out[0] - (0.5 - 0.485) / 0.229).abs() < 1e-6 && (out[600] - (0.5 - 0.406) / 0.225).abs() < 1e-6);
        let grey = Preprocess { in_chans: 1, channels: Channels::Colour, norm: InputNorm::None, ..spec };
        let out = grey.finish([vec![0.0; 256], vec![0.3; 256], vec![0.6; 256]].concat(), 3);
        assert!(out.len() == 256 && (out[7] - 0.3).abs() < 1e-6);
    }

    #[test]
    fn check_names_what_cannot_feed_the_network() {
        let spec = Preprocess {
            size: 64,
            in_chans: 3,
            channels: Channels::Stack,
            intensity: Intensity::Stored,
            norm: InputNorm::MinMax,
        };
        assert!(spec.check(3).is_ok());
        let e = spec.check(2).unwrap_err();
        assert!(e.contains("2 file(s)"), "{e}");
        assert!(Preprocess { in_chans: 2, ..spec.clone() }.check(2).is_ok());
        assert!(Preprocess { size: 30, ..spec }.check(3).is_err());
    }
}
