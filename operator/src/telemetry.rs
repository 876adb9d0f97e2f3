//! Logging: `tracing` with an `EnvFilter` from `RUST_LOG` (default `info`), JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json: false` gives human-readable lines.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
    if let Err(e) = result {
        eprintln!("logging was already set up: {e}");
    }
}
