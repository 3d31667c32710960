//! The operator's commands of the `outpost` binary: each module is one command (or a family),
//! built on [`node_client`] for those that talk to a running node.

pub mod backup;
pub mod demo;
pub mod doctor;
pub mod fmt;
pub mod node_client;
pub mod ops;
pub mod status;
