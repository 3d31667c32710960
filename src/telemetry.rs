//! Logging. Log lines carry operation ids and customer references, never names, e-mails,
//! phones or tokens.

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk) is dropped. With internal
        // errors on, tracing-subscriber reports it with `eprintln!`, which panics when stderr
        // cannot be written either: every handler, the writer thread and the sync tasks would
        // die on their next log line.
        .log_internal_errors(false);
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
