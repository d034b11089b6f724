//! vismae-model: the three VIS-MAE networks in burn (window-masked Swin MAE, Swin-UNet, Swin
//! classifier), their geometry, and weight exchange with the official PyTorch code. Generic over
//! the burn backend; never touches the CLI. See SPEC §1-5 for the reference it mirrors.

pub mod attention;
pub mod backbone;
pub mod block;
pub mod classifier;
pub mod config;
pub mod cpu;
pub mod cpu_train;
pub mod cpu_train_attention;
pub mod error;
pub mod geometry;
pub mod layers;
pub mod mae;
pub mod masking;
pub mod params;
pub mod simclr;
pub mod store;
pub mod unet;
pub mod weights;

pub use classifier::SwinClassifier;
pub use config::{ClassifierConfig, MaeConfig, SwinConfig, UnetConfig, Variant, VariantExt};
pub use error::ModelError;
pub use mae::{MaeOutput, SwinMae};
pub use masking::{MaskGeometry, MaskPlan};
pub use simclr::{SimClr, SimClrConfig};
pub use unet::SwinUnet;

/// The CPU backend used by this crate's unit tests.
#[cfg(test)]
pub(crate) type TestBackend = burn::backend::Flex;
