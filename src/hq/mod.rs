//! Everything about HQ: the wire protocol both sides speak, the client the node uses, and the
//! HQ emulator used by tests, benches and demos.

pub mod client;
pub mod emulator;
pub mod wire;

pub use client::{HqClient, HqClientError, HqError, RtsOutcome};
pub use emulator::{HqEmulator, HqEmulatorConfig, HqEmulatorError};
