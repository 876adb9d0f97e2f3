//! The project's own wire API: the collector's live-tap service, the OTLP
//! collector services (generated with a codec that hands requests over as
//! bytes), and a validating walk over encoded OTLP requests.
#![forbid(unsafe_code)]

pub mod codec;
pub mod wire;

/// `otlpfleet.tap.v1`: stream matching telemetry out of a running collector.
pub mod tap {
    pub mod v1 {
        tonic::include_proto!("otlpfleet.tap.v1");
    }
}

/// Servers for the three OTLP collector services (`Export` only).
pub mod otlp {
    pub mod trace {
        include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.collector.trace.v1.TraceService.rs"));
    }
    pub mod metrics {
        include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.collector.metrics.v1.MetricsService.rs"));
    }
    pub mod logs {
        include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.collector.logs.v1.LogsService.rs"));
    }
}
