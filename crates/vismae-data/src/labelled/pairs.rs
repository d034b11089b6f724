//! A segmentation case read as 2-D pairs of image and label map, one per volume slice along a
//! plane (or the one image of a 2-D file), with the geometry of image and mask checked.

use super::{Sample, Target, bad};
use crate::error::{DataError, Reason};
use crate::raster::Raster;
use crate::source::{RawImage, SliceOptions, Source};
use crate::volume::Plane;

/// One 2-D image with its label map, both at their native size.
#[derive(Clone, Debug)]
pub struct SegPair {
    /// Grey or multi-channel image values (unnormalised).
    pub image: Raster,
    /// Class index per pixel.
    pub mask: Raster,
    /// Slice (volumes) or frame index.
    pub index: usize,
}

impl SegPair {
    /// Both resized to `size x size`: the image antialiased bilinear, the mask nearest neighbour
    /// (so it keeps class indices only), as the reference does (`TF.resize` with `NEAREST`).
    pub fn resized(&self, size: usize) -> SegPair {
        SegPair {
            image: self.image.resize_bilinear(size, size),
            mask: self.mask.resize_nearest(size, size),
            index: self.index,
        }
    }
}

/// Reads a segmentation sample as 2-D pairs of stored values: every slice of a volume along
/// `plane`, or the one image of a 2-D file, grey (several image files become interleaved channels).
/// Image and mask must have the same geometry: a clear error names the case.
pub fn seg_pairs(sample: &Sample, plane: Plane) -> Result<Vec<SegPair>, DataError> {
    let pairs = read_pairs(sample, plane, |raw| Ok(raw.raster.to_grey()))?;
    Ok(pairs
        .into_iter()
        .map(|(mut files, mask, index)| {
            let image = if files.len() == 1 {
                files.remove(0)
            } else {
                let (w, h) = (mask.width, mask.height);
                let mut data = Vec::with_capacity(w * h * files.len());
                for i in 0..w * h {
                    for f in &files {
                        data.push(f.data[i * f.channels]);
                    }
                }
                Raster::new(w, h, files.len(), data)
            };
            SegPair { image, mask, index }
        })
        .collect())
}

/// One 2-D input of a case as read: one raster per image file (each as `read` makes it), the
/// label map, and the slice or frame index.
pub type CasePair = (Vec<Raster>, Raster, usize);

/// Reads a segmentation sample slice by slice along `plane`: each image file's slice through
/// `read` (which decides intensities and colour), and the mask's. Every file must have the mask's
/// number of slices and size, and the mask must hold class indices; errors name the case.
pub fn read_pairs(
    sample: &Sample,
    plane: Plane,
    read: impl Fn(&RawImage) -> Result<Raster, DataError>,
) -> Result<Vec<CasePair>, DataError> {
    if let Target::Annotation { file, rois } = &sample.target {
        return annotation_pairs(sample, file, rois, plane, &read);
    }
    let Target::Mask(mask_path) = &sample.target else {
        return Err(bad(&sample.images[0], format!("case {} has no label map", sample.id)));
    };
    let opts = SliceOptions { planes: vec![plane], stride: 1, skip_empty: false };
    let mask_src = Source::open(mask_path, &opts)?;
    let img_srcs = sample.images.iter().map(|p| Source::open(p, &opts)).collect::<Result<Vec<_>, _>>()?;
    for (p, s) in sample.images.iter().zip(&img_srcs) {
        if s.len() != mask_src.len() {
            return Err(bad(
                p,
                format!(
                    "case {}: the image has {} slice(s), its mask {} ({})",
                    sample.id,
                    s.len(),
                    mask_src.len(),
                    mask_path.display()
                ),
            ));
        }
    }
    let mut out = Vec::with_capacity(mask_src.len());
    for k in 0..mask_src.len() {
        let mask = mask_src.image(k, &opts)?.map(|m| m.raster.to_grey()).ok_or_else(|| bad(mask_path, "empty mask"))?;
        let mut files = Vec::with_capacity(img_srcs.len());
        for (p, s) in sample.images.iter().zip(&img_srcs) {
            let raw = s.image(k, &opts)?.ok_or_else(|| bad(p, "empty image"))?;
            let img = read(&raw)?;
            if (img.width, img.height) != (mask.width, mask.height) {
                return Err(bad(
                    p,
                    format!(
                        "case {}: image is {}x{} but its mask {} is {}x{}",
                        sample.id,
                        img.width,
                        img.height,
                        mask_path.display(),
                        mask.width,
                        mask.height
                    ),
                ));
            }
            files.push(img);
        }
        if mask.data.iter().any(|&v| v < 0.0 || v.fract() != 0.0) {
            return Err(DataError::new(
                mask_path,
                Reason::Corrupt,
                format!("case {}: the mask holds values that are not class indices", sample.id),
            ));
        }
        out.push((files, mask, k));
    }
    Ok(out)
}

/// [`read_pairs`] of a DICOM case: the series' slices, each with its slice of the annotation.
fn annotation_pairs(
    sample: &Sample,
    file: &std::path::Path,
    rois: &[(String, usize)],
    plane: Plane,
    read: &impl Fn(&RawImage) -> Result<Raster, DataError>,
) -> Result<Vec<CasePair>, DataError> {
    let dir = &sample.images[0];
    if plane != Plane::Axial {
        return Err(bad(
            dir,
            format!("case {}: a DICOM case is read as its series' own slices (plane axial)", sample.id),
        ));
    }
    let (masks, files) = super::annotation_slices(dir, file, rois)?;
    let opts = SliceOptions { skip_empty: false, ..Default::default() };
    let mut out = Vec::with_capacity(files.len());
    for (k, (f, mask)) in files.iter().zip(masks).enumerate() {
        let raw = Source::open(f, &opts)?.image(0, &opts)?.ok_or_else(|| bad(f, "empty image"))?;
        let img = read(&raw)?;
        if (img.width, img.height) != (mask.width, mask.height) {
            return Err(bad(
                f,
                format!(
                    "case {}: the slice is {}x{}, its grid {}x{}",
                    sample.id, img.width, img.height, mask.width, mask.height
                ),
            ));
        }
        out.push((vec![img], mask, k));
    }
    Ok(out)
}
