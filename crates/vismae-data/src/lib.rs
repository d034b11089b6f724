//! vismae-data: medical image readers (DICOM, NIfTI, MHA/MHD, NRRD, PNG/JPEG/TIFF) behind one
//! entry point that detects the format from content, intensity windowing, resizing as PIL does
//! it, and conversion of one image to a PNG. burn appears nowhere in this crate.

pub mod annotations;
pub mod bench;
pub mod convert;
pub mod dataset;
pub mod dicom;
pub mod error;
pub mod guard;
pub mod intensity;
pub mod labelled;
pub mod limits;
pub mod modality;
pub mod prep;
pub mod raster;
pub mod series;
pub mod source;
pub mod splits;
pub mod volume;

pub use error::{DataError, Reason};
pub use limits::Limits;
pub use raster::Raster;
pub use source::{Format, NormaliseOptions, RawImage, SliceOptions, Source};
