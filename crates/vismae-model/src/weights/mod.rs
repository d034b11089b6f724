//! Weight files and their application to the networks: a plain state dict (official key ->
//! tensor), readers for safetensors and official `.pth` checkpoints, a safetensors writer, and
//! import/export/transfer with an exact report of applied, missing and unused keys.

mod apply;
mod detect;
pub mod swin_import;
mod transfer;

pub use vismae_weights::{
    Format, ShapeMismatch, StateDict, TensorEntry, Values, WeightError, pth, pth_write, read_state_dict,
    safetensors_io, write_atomic, write_card_beside,
};

pub use apply::{LoadOptions, LoadReport, Visit, apply_state_dict, export_state_dict};
pub use detect::{ModelInfo, ModelKind, detect};
pub use transfer::{DecoderInit, adapt_input_channels, mirror_encoder_into_decoder};
