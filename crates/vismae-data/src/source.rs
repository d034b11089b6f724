//! One entry point over every format: detect the format from the file's content (not its
//! extension), list the 2-D images a file holds (DICOM frames, volume slices along chosen planes,
//! or the single image of a PNG/JPEG/TIFF), and bring each to `[0, 1]` by the documented rules.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dicom::{DicomFile, DicomMeta};
use crate::error::{DataError, Reason};
use crate::intensity::{self, Fallback, Normalisation, VoiFunction, Window};
use crate::limits::Limits;
use crate::raster::Raster;
use crate::volume::{self, Plane, Volume};

/// File formats vismae reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// DICOM (Part 10 file or bare data set).
    Dicom,
    /// NIfTI-1, plain or gzipped.
    Nifti,
    /// MetaImage `.mha` / `.mhd`.
    MetaImage,
    /// NRRD.
    Nrrd,
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// TIFF.
    Tiff,
}

/// Detects the format of a file from its first bytes (gzip is looked through for NIfTI).
pub fn detect(path: &Path) -> Result<Format, DataError> {
    let mut head = Vec::with_capacity(1024);
    std::fs::File::open(path)
        .and_then(|f| f.take(1024).read_to_end(&mut head))
        .map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
    if head.is_empty() {
        return Err(DataError::new(path, Reason::Empty, "the file is empty"));
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        let mut inner = Vec::with_capacity(400);
        let file = std::fs::File::open(path).map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?;
        let _ = flate2::read::MultiGzDecoder::new(file).take(400).read_to_end(&mut inner);
        let nifti2 = inner.len() >= 4 && i32::from_le_bytes([inner[0], inner[1], inner[2], inner[3]]) == 540;
        if volume::sniff_nifti(&inner) || nifti2 {
            return Ok(Format::Nifti);
        }
        return Err(DataError::new(path, Reason::UnknownFormat, "a gzip file that does not hold a NIfTI image"));
    }
    if crate::dicom::sniff(&head) {
        return Ok(Format::Dicom);
    }
    if volume::sniff_nifti(&head)
        || (head.len() >= 4 && i32::from_le_bytes([head[0], head[1], head[2], head[3]]) == 540)
    {
        return Ok(Format::Nifti);
    }
    if volume::sniff_nrrd(&head) {
        return Ok(Format::Nrrd);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if head.starts_with(&[0xff, 0xd8, 0xff]) {
        return Ok(Format::Jpeg);
    }
    if head.starts_with(b"II*\0") || head.starts_with(b"MM\0*") {
        return Ok(Format::Tiff);
    }
    if volume::sniff_metaimage(&head) {
        return Ok(Format::MetaImage);
    }
    Err(DataError::new(path, Reason::UnknownFormat, "not DICOM, NIfTI, MetaImage, NRRD, PNG, JPEG or TIFF"))
}

/// Which 2-D images to take from volumes.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceOptions {
    /// Planes to slice volumes along.
    pub planes: Vec<Plane>,
    /// Take every `stride`-th slice.
    pub stride: usize,
    /// Leave out slices whose values are all equal.
    pub skip_empty: bool,
}

impl Default for SliceOptions {
    fn default() -> Self {
        Self { planes: vec![Plane::Axial], stride: 1, skip_empty: true }
    }
}

/// Where an image came from inside its file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Frame (DICOM) or slice (volumes) index.
    pub index: usize,
    /// Slicing plane (volumes).
    pub plane: Option<Plane>,
    /// Time point (4-D volumes).
    pub t: usize,
}

/// One 2-D image before normalisation, with what is needed to normalise it.
#[derive(Clone, Debug)]
pub struct RawImage {
    /// Where it came from.
    pub origin: Origin,
    /// Values: HU for CT DICOM, stored values otherwise; 1 or 3 channels.
    pub raster: Raster,
    /// DICOM header facts, when the file is DICOM.
    pub dicom: Option<DicomMeta>,
    /// Values span `[0, max]` by construction (8/16-bit rasters, colour DICOM): normalised by it.
    pub type_max: Option<f64>,
    /// Pixel spacing (rows, columns) in mm, when known.
    pub spacing: Option<(f64, f64)>,
}

/// How to bring an image to `[0, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NormaliseOptions {
    /// A window that overrides everything.
    pub window: Option<Window>,
    /// Which of the header's windows to use (0 = first).
    pub window_index: usize,
    /// What to do without a usable window.
    pub fallback: Fallback,
    /// Keep 3 channels of colour images instead of converting to grey.
    pub keep_rgb: bool,
}

impl RawImage {
    /// Normalises to `[0, 1]`: a user window, else the DICOM header's window, else the value range
    /// of 8/16-bit rasters and colour DICOM, else the fallback. MONOCHROME1 is inverted.
    pub fn normalise(&self, opts: &NormaliseOptions) -> (Raster, Normalisation) {
        let mut r = if opts.keep_rgb { self.raster.clone() } else { self.raster.to_grey() };
        let header: Option<(Window, VoiFunction)> = self.dicom.as_ref().and_then(|m| m.window(opts.window_index));
        let norm = match (opts.window, header, self.type_max) {
            (None, h, Some(max)) if h.is_none_or(|(w, f)| !w.is_valid(f)) => {
                Normalisation::Range { lo: 0.0, hi: max, fallback: Fallback::MinMax }
            }
            _ => intensity::choose(&r.data, opts.window, header, opts.fallback),
        };
        let invert = self.dicom.as_ref().is_some_and(DicomMeta::inverted);
        intensity::normalise(&mut r.data, &norm, invert);
        (r, norm)
    }
}

/// An opened file and the images it holds.
pub enum Source {
    /// A DICOM file (frames decoded on demand).
    Dicom(Box<DicomFile>),
    /// A volume and the slices taken from it.
    Volume {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Format,
        /// The data.
        volume: Volume,
        /// `(plane, slice, t)` of each image.
        items: Vec<(Plane, usize, usize)>,
    },
    /// A PNG/JPEG/TIFF image.
    Raster {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Format,
        /// The image.
        raster: Raster,
        /// 255 or 65535.
        max: f64,
    },
}

fn read_raster(path: &Path, limits: &Limits) -> Result<(Raster, f64), DataError> {
    let open = || {
        image::ImageReader::open(path)
            .map_err(|e| DataError::new(path, Reason::Io, e.to_string()))?
            .with_guessed_format()
            .map_err(|e| DataError::new(path, Reason::Io, e.to_string()))
    };
    // the header's size first: the samples are held as 32-bit floats, at most 3 channels
    let (w, h) = open()?
        .into_dimensions()
        .map_err(|e| DataError::new(path, Reason::Corrupt, format!("cannot decode image: {e}")))?;
    limits.check_samples(path, &format!("width x height {w} x {h} (x 3 channels)"), w as u128 * h as u128 * 3)?;
    let mut reader = open()?;
    let mut caps = image::Limits::default();
    caps.max_alloc = Some(limits.max_image_bytes);
    reader.limits(caps);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => DataError::new(
            path,
            Reason::TooLarge,
            format!(
                "decoding needs more memory than the limit of {}: {l}",
                crate::limits::fmt_bytes(limits.max_image_bytes)
            ),
        ),
        e => DataError::new(path, Reason::Corrupt, format!("cannot decode image: {e}")),
    })?;
    use image::DynamicImage as D;
    let (w, h) = (w as usize, h as usize);
    Ok(match img {
        D::ImageLuma8(_) | D::ImageLumaA8(_) => {
            (Raster::new(w, h, 1, img.to_luma8().into_raw().into_iter().map(f32::from).collect()), 255.0)
        }
        D::ImageLuma16(_) | D::ImageLumaA16(_) => {
            (Raster::new(w, h, 1, img.to_luma16().into_raw().into_iter().map(f32::from).collect()), 65535.0)
        }
        D::ImageRgb16(_) | D::ImageRgba16(_) => {
            (Raster::new(w, h, 3, img.to_rgb16().into_raw().into_iter().map(f32::from).collect()), 65535.0)
        }
        D::ImageRgb32F(_) | D::ImageRgba32F(_) => (Raster::new(w, h, 3, img.to_rgb32f().into_raw()), 1.0),
        _ => (Raster::new(w, h, 3, img.to_rgb8().into_raw().into_iter().map(f32::from).collect()), 255.0),
    })
}

impl Source {
    /// Opens a file of any supported format and lists its images, with the default [`Limits`].
    pub fn open(path: &Path, slices: &SliceOptions) -> Result<Source, DataError> {
        Self::open_with(path, slices, &Limits::default())
    }

    /// Opens a file of any supported format within `limits` and lists its images.
    pub fn open_with(path: &Path, slices: &SliceOptions, limits: &Limits) -> Result<Source, DataError> {
        let format = detect(path)?;
        Ok(match format {
            Format::Dicom => Source::Dicom(Box::new(DicomFile::open_with(path, limits)?)),
            Format::Nifti | Format::MetaImage | Format::Nrrd => {
                let volume = match format {
                    Format::Nifti => volume::read_nifti_with(path, limits)?,
                    Format::MetaImage => volume::read_metaimage_with(path, limits)?,
                    _ => volume::read_nrrd_with(path, limits)?,
                };
                let mut items = Vec::new();
                let stride = slices.stride.max(1);
                for t in 0..volume.dims[3] {
                    for &plane in &slices.planes {
                        for s in (0..volume.num_slices(plane)).step_by(stride) {
                            items.push((plane, s, t));
                        }
                    }
                }
                Source::Volume { path: path.into(), format, volume, items }
            }
            Format::Png | Format::Jpeg | Format::Tiff => {
                let (raster, max) = read_raster(path, limits)?;
                Source::Raster { path: path.into(), format, raster, max }
            }
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Source::Dicom(d) => d.meta.frames,
            Source::Volume { items, .. } => items.len(),
            Source::Raster { .. } => 1,
        }
    }

    /// Whether the file holds no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `k`; `None` when it is an empty volume slice that the options leave out.
    pub fn image(&self, k: usize, slices: &SliceOptions) -> Result<Option<RawImage>, DataError> {
        match self {
            Source::Dicom(d) => {
                let raster = d.frame(k)?;
                let colour = raster.channels == 3;
                let type_max = colour
                    .then_some(255.0f64)
                    .map(|m| if raster.data.iter().any(|&v| v > 255.0) { 65535.0 } else { m });
                Ok(Some(RawImage {
                    origin: Origin { path: d.path().to_path_buf(), format: Format::Dicom, index: k, plane: None, t: 0 },
                    spacing: d.meta.spacing,
                    dicom: Some(d.meta.clone()),
                    type_max,
                    raster,
                }))
            }
            Source::Volume { path, format, volume, items } => {
                let &(plane, s, t) = items.get(k).ok_or_else(|| {
                    DataError::new(
                        path,
                        Reason::BadArgument,
                        format!("image {k} requested, the volume gives {}", items.len()),
                    )
                })?;
                let raster = volume.slice(plane, s, t);
                if slices.skip_empty && raster.data.windows(2).all(|w| w[0] == w[1]) {
                    return Ok(None);
                }
                Ok(Some(RawImage {
                    origin: Origin { path: path.clone(), format: *format, index: s, plane: Some(plane), t },
                    raster,
                    dicom: None,
                    type_max: None,
                    spacing: Some(volume.slice_spacing(plane)),
                }))
            }
            Source::Raster { path, format, raster, max } => Ok(Some(RawImage {
                origin: Origin { path: path.clone(), format: *format, index: 0, plane: None, t: 0 },
                raster: raster.clone(),
                dicom: None,
                type_max: Some(*max),
                spacing: None,
            })),
        }
    }
}
