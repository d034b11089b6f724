//! Errors of the networks: a configuration that cannot be built, a mask plan that does not fit
//! the input, an input the network cannot take, a state dict that is no VIS-MAE network.

/// Why a network could not be built or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// An architecture configuration that breaks the networks' invariants.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A mask plan that does not fit the token grid or the input.
    #[error("{0}")]
    Mask(String),
    /// An input of the wrong channels or size.
    #[error("{0}")]
    Input(String),
    /// A state dict that none of the three networks recognises.
    #[error("{0}")]
    Unrecognised(String),
}
