//! Outpost: an offline-first store edge node for retail point of sale.
//!
//! The till talks to [`api`]; [`domain`] holds the rules; [`store`] keeps everything durable in
//! one redb file; [`node`] wires them together.

pub mod api;
pub mod config;
pub mod domain;
pub mod hq;
pub mod node;
pub mod process;
pub mod store;
pub mod sync;
pub mod telemetry;
