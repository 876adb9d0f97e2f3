//! The project's own wire API: the collector's live-tap service, and a
//! validating walk over encoded OTLP requests.
#![forbid(unsafe_code)]

pub mod wire;

/// `otlpfleet.tap.v1`: stream matching telemetry out of a running collector.
pub mod tap {
    pub mod v1 {
        tonic::include_proto!("otlpfleet.tap.v1");
    }
}
