//! The only I/O: watch OtlpCollectors, CollectorPipelines and the collectors' children,
//! reconcile, lead, serve metrics.

pub mod collector_pipeline;
pub mod context;
pub mod otlp_collector;

pub use context::{Context, RunConfig};
pub use otlp_collector::{error_policy, reconcile, run, serve_http};
