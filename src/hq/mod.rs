//! Everything about HQ: the wire protocol both sides speak, the client the node uses, and the
//! HQ emulator used by tests, benches and demos.

pub mod wire;
