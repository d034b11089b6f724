//! The one integration-test binary of vismae-model: parity with the official implementation
//! (`parity`), weight files and transfers (`weights`), and model-level behaviour (`models`).

mod fixture;
mod import;
mod models;
mod parity;
mod weights;
