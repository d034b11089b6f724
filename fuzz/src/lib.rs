//! The fuzz targets' shared harness: one function per kind of untrusted input.

pub mod harness;
pub mod harness_weights;
