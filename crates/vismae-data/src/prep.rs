//! Steps 1-3 of [`Preprocess`] (what a network sees), read from files: a case's images with the
//! spec's intensities and colour, turned into planes and resized to the network's side. Training,
//! validation and prediction all read their inputs here, so a model is scored on what it was
//! trained on. Steps 4-5 (augmentation, then [`Preprocess::finish`]) follow in the caller.

use std::path::{Path, PathBuf};

use vismae_run::{Channels, Intensity, Preprocess};

use crate::error::{DataError, Reason};
use crate::intensity::Window;
use crate::labelled::{Sample, read_pairs};
use crate::raster::Raster;
use crate::source::{NormaliseOptions, RawImage, SliceOptions, Source};
use crate::volume::Plane;

/// One input before augmentation: `planes` planar planes of `size * size` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Planes {
    /// Planes (1 grey, 3 colour, or one per file of the case).
    pub planes: usize,
    /// Side.
    pub size: usize,
    /// `planes * size * size` values, plane after plane.
    pub data: Vec<f32>,
}

/// Step 1 for one image of a file: its values as stored or brought to `[0, 1]` by the format's
/// rules, grey unless the spec keeps colour.
pub fn read_raw(raw: &RawImage, spec: &Preprocess) -> Raster {
    let colour = spec.channels == Channels::Colour;
    match &spec.intensity {
        Intensity::Stored => {
            if colour {
                raw.raster.clone()
            } else {
                raw.raster.to_grey()
            }
        }
        Intensity::Rules { window, fallback } => {
            let opts = NormaliseOptions {
                window: window.map(|[center, width]| Window { center, width }),
                window_index: 0,
                fallback: *fallback,
                keep_rgb: colour,
            };
            raw.normalise(&opts).0
        }
    }
}

/// Steps 2-3: the rasters of one input's files (all of one size) as planes resized to the spec's
/// side. Errors when the files do not fit the channel policy.
pub fn planes(spec: &Preprocess, files: &[Raster]) -> Result<Planes, String> {
    let n = spec.size;
    let data = planes_by(spec, files, |r: &Raster| r.resize_bilinear(n, n))?;
    Ok(Planes { planes: data.len() / (n * n), size: n, data })
}

/// One input's planes at its files' own size (step 2 without the resize of step 3): what patch
/// training cuts patches from and a sliding window slides over.
#[derive(Clone, Debug, PartialEq)]
pub struct NativePlanes {
    /// Planes (1 grey, 3 colour, or one per file of the case).
    pub planes: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `planes * width * height` values, plane after plane.
    pub data: Vec<f32>,
}

/// Step 2 of one input's files (all of one size), kept at their size.
pub fn native_planes(spec: &Preprocess, files: &[Raster]) -> Result<NativePlanes, String> {
    let first = files.first().ok_or("no image")?;
    let (width, height) = (first.width, first.height);
    let data = planes_by(spec, files, Raster::clone)?;
    Ok(NativePlanes { planes: data.len() / (width * height).max(1), width, height, data })
}

/// The planes of `files` by the spec's channel policy, each raster passed through `resize`.
fn planes_by(spec: &Preprocess, files: &[Raster], resize: impl Fn(&Raster) -> Raster) -> Result<Vec<f32>, String> {
    let first = files.first().ok_or("no image")?;
    if files.iter().any(|f| (f.width, f.height) != (first.width, first.height)) {
        return Err("the image files of one case differ in size".into());
    }
    let data: Vec<f32> = match spec.channels {
        Channels::Grey | Channels::Colour if files.len() != 1 => {
            return Err(format!(
                "{} image files per case cannot feed {:?} channels: use channels = \"stack\"",
                files.len(),
                spec.channels
            ));
        }
        Channels::Grey => resize(&first.to_grey()).data,
        Channels::Colour => {
            let r = resize(&first.replicate(3));
            let c = r.channels;
            (0..3).flat_map(|k| r.data.iter().skip(k.min(c - 1)).step_by(c).copied().collect::<Vec<_>>()).collect()
        }
        Channels::Stack => files.iter().flat_map(|f| resize(&f.to_grey()).data).collect(),
    };
    Ok(data)
}

/// One 2-D training or validation example of a segmentation case at its native size: the rasters
/// of its files (step 1 done) and its label map.
#[derive(Clone, Debug)]
pub struct SegSlice {
    /// One raster per image file.
    pub files: Vec<Raster>,
    /// Class index per pixel.
    pub mask: Vec<u8>,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// A segmentation sample's slices along `plane` (or its one 2-D image), read as the spec says.
pub fn seg_slices(sample: &Sample, spec: &Preprocess, plane: Plane) -> Result<Vec<SegSlice>, DataError> {
    let pairs = read_pairs(sample, plane, |raw| Ok(read_raw(raw, spec)))?;
    pairs
        .into_iter()
        .map(|(files, mask, _)| {
            if let Some(&v) = mask.data.iter().find(|&&v| v > 255.0) {
                return Err(DataError::new(
                    &sample.images[0],
                    Reason::Corrupt,
                    format!("case {}: the mask holds class {v}; at most 255 classes are supported", sample.id),
                ));
            }
            Ok(SegSlice {
                width: mask.width,
                height: mask.height,
                mask: mask.data.iter().map(|&v| v as u8).collect(),
                files,
            })
        })
        .collect()
}

/// Every 2-D image of one file (DICOM frames, volume slices along `plane`, or the one image of a
/// PNG/JPEG/TIFF), read as the spec says.
pub fn file_images(path: &Path, spec: &Preprocess, plane: Plane) -> Result<Vec<Raster>, DataError> {
    let opts = SliceOptions { planes: vec![plane], stride: 1, skip_empty: false };
    let src = Source::open(path, &opts)?;
    (0..src.len())
        .map(|k| {
            src.image(k, &opts)?
                .map(|raw| read_raw(&raw, spec))
                .ok_or_else(|| DataError::new(path, Reason::Empty, format!("image {k} is empty")))
        })
        .collect()
}

/// The classification input of a case: the middle image (frame or axial slice) of each of its
/// files, read as the spec says.
pub fn middle_images(files: &[PathBuf], spec: &Preprocess) -> Result<Vec<Raster>, DataError> {
    let opts = SliceOptions { skip_empty: false, ..Default::default() };
    files
        .iter()
        .map(|path| {
            let src = Source::open(path, &opts)?;
            if src.is_empty() {
                return Err(DataError::new(path, Reason::Empty, "the file holds no image"));
            }
            src.image(src.len() / 2, &opts)?
                .map(|raw| read_raw(&raw, spec))
                .ok_or_else(|| DataError::new(path, Reason::Empty, "empty image"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vismae_run::InputNorm;

    fn spec(channels: Channels) -> Preprocess {
        Preprocess { size: 4, in_chans: 3, channels, intensity: Intensity::Stored, norm: InputNorm::MinMax }
    }

    #[test]
    fn planes_by_channel_policy() {
        let a = Raster::new(2, 2, 1, vec![0.0, 1.0, 2.0, 3.0]);
        let b = Raster::new(2, 2, 1, vec![4.0; 4]);
        let g = planes(&spec(Channels::Grey), std::slice::from_ref(&a)).unwrap();
        assert_eq!((g.planes, g.data.len()), (1, 16));
        let s = planes(&spec(Channels::Stack), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(s.planes, 2);
        assert!(s.data[16..].iter().all(|&v| (v - 4.0).abs() < 1e-6));
        let e = planes(&spec(Channels::Grey), &[a.clone(), b]).unwrap_err();
        assert!(e.contains("stack"), "{e}");
        let rgb = Raster::new(1, 1, 3, vec![0.1, 0.2, 0.3]);
        let c = planes(&Preprocess { size: 4, ..spec(Channels::Colour) }, &[rgb]).unwrap();
        assert_eq!(c.planes, 3);
        assert!((c.data[0] - 0.1).abs() < 1e-6 && (c.data[16] - 0.2).abs() < 1e-6 && (c.data[47] - 0.3).abs() < 1e-6);
        let c = planes(&spec(Channels::Colour), &[a]).unwrap();
        assert_eq!(&c.data[..16], &c.data[32..]);
    }
}
