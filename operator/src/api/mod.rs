//! The operator's API: CRD types only, no client calls.

pub mod otlp_collector;

pub use otlp_collector::*;
