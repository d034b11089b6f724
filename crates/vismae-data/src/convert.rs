//! `vismae convert`: one image of any supported file, windowed and normalised, written as an 8-bit
//! grey PNG (native size unless a size is given). The way users look at a file, and the way
//! windowing is checked against pydicom-based references.

use std::path::Path;

use crate::error::{DataError, Reason};
use crate::intensity::{Normalisation, to_u8};
use crate::limits::Limits;
use crate::source::{NormaliseOptions, SliceOptions, Source};
use crate::volume::Plane;

/// Options of a conversion.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Intensity options.
    pub normalise: NormaliseOptions,
    /// DICOM frame or volume slice; volumes default to the middle axial slice.
    pub frame: Option<usize>,
    /// Output side (square, antialiased bilinear), or the native size.
    pub size: Option<usize>,
    /// Plane for volumes.
    pub plane: Option<Plane>,
    /// What the input may make the reader allocate.
    pub limits: Limits,
}

/// What a conversion did.
#[derive(Clone, Debug)]
pub struct ConvertSummary {
    /// Native width and height.
    pub native: (usize, usize),
    /// Written width and height.
    pub written: (usize, usize),
    /// Which image of the file.
    pub index: usize,
    /// How it was normalised.
    pub normalisation: Normalisation,
}

/// Converts one image of `input` to an 8-bit grey PNG at `output`.
pub fn convert(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertSummary, DataError> {
    let slices = SliceOptions { planes: vec![opts.plane.unwrap_or(Plane::Axial)], stride: 1, skip_empty: false };
    let source = Source::open_with(input, &slices, &opts.limits)?;
    let index = match (&source, opts.frame) {
        (_, Some(f)) => f,
        // the middle slice of the first time point
        (Source::Volume { volume, .. }, None) => volume.num_slices(slices.planes[0]) / 2,
        _ => 0,
    };
    if index >= source.len() {
        return Err(DataError::new(
            input,
            Reason::BadArgument,
            format!("--frame {index} is out of range: the file holds {} image(s)", source.len()),
        ));
    }
    let raw = source.image(index, &slices)?.ok_or_else(|| DataError::new(input, Reason::BadArgument, "empty image"))?;
    let norm_opts = NormaliseOptions { keep_rgb: false, ..opts.normalise };
    let (mut r, normalisation) = raw.normalise(&norm_opts);
    let native = (r.width, r.height);
    if let Some(s) = opts.size {
        r = r.resize_bilinear(s, s);
    }
    let bytes: Vec<u8> = r.data.iter().map(|&v| to_u8(v)).collect();
    let img = image::GrayImage::from_raw(r.width as u32, r.height as u32, bytes)
        .ok_or_else(|| DataError::new(output, Reason::BadArgument, "image buffer size mismatch"))?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| DataError::new(output, Reason::Io, format!("cannot encode PNG: {e}")))?;
    vismae_run::run_dir::write_atomic(output, png.get_ref())
        .map_err(|e| DataError::new(output, Reason::Io, format!("cannot write PNG: {e}")))?;
    Ok(ConvertSummary { native, written: (r.width, r.height), index, normalisation })
}
