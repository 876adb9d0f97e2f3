//! `debug`: one summary log line per batch (and one per item when detailed).

use crate::config::Verbosity;
use crate::encoded::Telemetry;
use crate::signal::Payload;

#[derive(Debug)]
pub struct DebugExporter {
    name: String,
    verbosity: Verbosity,
}

impl DebugExporter {
    pub fn new(name: &str, verbosity: Verbosity) -> Self {
        Self { name: name.to_owned(), verbosity }
    }

    pub fn export(&self, data: &Telemetry) {
        tracing::info!(
            exporter = %self.name,
            signal = %data.signal(),
            resources = data.resources(),
            items = data.items(),
            "batch received"
        );
        if self.verbosity != Verbosity::Detailed {
            return;
        }
        match data.decoded() {
            Ok(payload) => self.items(&payload),
            Err(e) => tracing::error!(exporter = %self.name, error = %e, "batch did not decode"),
        }
    }

    fn items(&self, payload: &Payload) {
        {
            match payload {
                Payload::Traces(v) => v.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).for_each(|s| {
                    tracing::info!(exporter = %self.name, span = %s.name, trace_id = %hex(&s.trace_id), span_id = %hex(&s.span_id), "span")
                }),
                Payload::Metrics(v) => v.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics).for_each(|m| {
                    tracing::info!(exporter = %self.name, metric = %m.name, points = crate::signal::data_points(&m.data), "metric")
                }),
                Payload::Logs(v) => v.iter().flat_map(|r| &r.scope_logs).flat_map(|s| &s.log_records).for_each(|l| {
                    tracing::info!(exporter = %self.name, severity = %l.severity_text, body = ?l.body, "log record")
                }),
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
