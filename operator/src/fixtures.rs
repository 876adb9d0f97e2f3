//! Test fixtures: `OtlpCollector::test().with_replicas(3).with_mtls()`.

use crate::api::{AutoscalingSpec, OtlpCollector, OtlpCollectorSpec, TlsMode};

impl OtlpCollector {
    /// `edge` in `telemetry`, generation 1, with the schema's defaults.
    pub fn test() -> Self {
        let spec: OtlpCollectorSpec = serde_json::from_value(serde_json::json!({})).expect("defaults deserialise");
        let mut cr = OtlpCollector::new("edge", spec);
        cr.metadata.namespace = Some("telemetry".into());
        cr.metadata.uid = Some("5c6f2a1e-0000-4000-8000-000000000001".into());
        cr.metadata.generation = Some(1);
        cr
    }

    pub fn with_replicas(mut self, n: i32) -> Self {
        self.spec.replicas = n;
        self
    }

    pub fn with_tls(mut self) -> Self {
        self.spec.tls.mode = TlsMode::Tls;
        self
    }

    pub fn with_mtls(mut self) -> Self {
        self.spec.tls.mode = TlsMode::MutualTLS;
        self
    }

    pub fn with_autoscaling(mut self, min: i32, max: i32, cpu: i32) -> Self {
        self.spec.autoscaling = Some(AutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            target_cpu_utilization: Some(cpu),
            target_memory_utilization: None,
            behavior: None,
        });
        self
    }

    pub fn with_generation(mut self, g: i64) -> Self {
        self.metadata.generation = Some(g);
        self
    }
}
