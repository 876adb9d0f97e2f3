//! Logging: `tracing` with the filter from `RUST_LOG` (default `info`), as
//! JSON lines (the default, for log pipelines) or human-readable text.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests starting several collectors) keeps the first subscriber.
    let _ = result;
}
