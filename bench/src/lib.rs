//! The load generator `otlp-load` as a library: deterministic payloads
//! ([`payload`]) and the load run itself ([`load`]), so tests drive a
//! collector exactly the way the benchmark does.
#![forbid(unsafe_code)]

pub mod load;
pub mod payload;

pub use payload::{Profile, Request};
