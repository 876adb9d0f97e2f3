//! The operator's API: CRD types only, no client calls.

pub mod collector_pipeline;
pub mod otlp_collector;

pub use collector_pipeline::*;
pub use otlp_collector::*;
