//! Checks of decoded OTLP data that protobuf decoding cannot make.
//!
//! Bad items are removed in place and counted; the rest of the request goes
//! on. The receiver answers a request with only bad items `INVALID_ARGUMENT`,
//! and one with some bad items an OTLP `partial_success`.

use opentelemetry_proto::tonic::metrics::v1::metric;

use crate::signal::Payload;

/// Items removed from a request, and why the first of them was.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub count: usize,
    pub first_reason: Option<String>,
}

impl Rejected {
    fn note(&mut self, reason: impl FnOnce() -> String) {
        self.count += 1;
        if self.first_reason.is_none() {
            self.first_reason = Some(reason());
        }
    }

    /// A message for `partial_success.error_message` or the error status.
    pub fn message(&self) -> String {
        match &self.first_reason {
            Some(r) if self.count > 1 => format!("{} invalid items rejected; first: {r}", self.count),
            Some(r) => format!("1 invalid item rejected: {r}"),
            None => String::new(),
        }
    }
}

fn id_ok(id: &[u8], len: usize, optional: bool) -> bool {
    (optional && id.is_empty()) || (id.len() == len && id.iter().any(|b| *b != 0))
}

/// Removes invalid items (and then empty scopes and resources) from `payload`.
pub fn validate(payload: &mut Payload) -> Rejected {
    let mut rejected = Rejected::default();
    match payload {
        Payload::Traces(resources) => {
            for rs in resources.iter_mut() {
                for ss in rs.scope_spans.iter_mut() {
                    ss.spans.retain(|s| {
                        let why = if !id_ok(&s.trace_id, 16, false) {
                            Some(format!(
                                "span {:?}: trace_id must be 16 bytes, not all zero (got {})",
                                s.name,
                                s.trace_id.len()
                            ))
                        } else if !id_ok(&s.span_id, 8, false) {
                            Some(format!(
                                "span {:?}: span_id must be 8 bytes, not all zero (got {})",
                                s.name,
                                s.span_id.len()
                            ))
                        } else if !s.parent_span_id.is_empty() && s.parent_span_id.len() != 8 {
                            Some(format!(
                                "span {:?}: parent_span_id must be empty or 8 bytes (got {})",
                                s.name,
                                s.parent_span_id.len()
                            ))
                        } else {
                            s.links.iter().find(|l| !id_ok(&l.trace_id, 16, false) || !id_ok(&l.span_id, 8, false)).map(
                                |l| {
                                    format!(
                                        "span {:?}: a link has a trace_id of {} and span_id of {} bytes",
                                        s.name,
                                        l.trace_id.len(),
                                        l.span_id.len()
                                    )
                                },
                            )
                        };
                        match why {
                            Some(why) => {
                                rejected.note(|| why);
                                false
                            }
                            None => true,
                        }
                    });
                }
                rs.scope_spans.retain(|s| !s.spans.is_empty());
            }
            resources.retain(|r| !r.scope_spans.is_empty());
        }
        Payload::Metrics(resources) => {
            for rm in resources.iter_mut() {
                for sm in rm.scope_metrics.iter_mut() {
                    sm.metrics.retain(|m| {
                        let why = if m.name.is_empty() {
                            Some("a metric has an empty name".to_owned())
                        } else if m.data.is_none() {
                            Some(format!("metric {:?} has no data", m.name))
                        } else if let Some((t, s)) =
                            exemplar_ids(&m.data).find(|(t, s)| !id_ok(t, 16, true) || !id_ok(s, 8, true))
                        {
                            Some(format!(
                                "metric {:?}: an exemplar has a trace_id of {} and span_id of {} bytes",
                                m.name,
                                t.len(),
                                s.len()
                            ))
                        } else {
                            None
                        };
                        match why {
                            Some(why) => {
                                // A metric counts as its data points, at least one.
                                for _ in 0..crate::signal::data_points(&m.data).max(1) {
                                    rejected.note(|| why.clone());
                                }
                                false
                            }
                            None => true,
                        }
                    });
                }
                rm.scope_metrics.retain(|s| !s.metrics.is_empty());
            }
            resources.retain(|r| !r.scope_metrics.is_empty());
        }
        Payload::Logs(resources) => {
            for rl in resources.iter_mut() {
                for sl in rl.scope_logs.iter_mut() {
                    sl.log_records.retain(|l| {
                        let why = if !id_ok(&l.trace_id, 16, true) {
                            Some(format!("log record: trace_id must be empty or 16 bytes (got {})", l.trace_id.len()))
                        } else if !id_ok(&l.span_id, 8, true) {
                            Some(format!("log record: span_id must be empty or 8 bytes (got {})", l.span_id.len()))
                        } else {
                            None
                        };
                        match why {
                            Some(why) => {
                                rejected.note(|| why);
                                false
                            }
                            None => true,
                        }
                    });
                }
                rl.scope_logs.retain(|s| !s.log_records.is_empty());
            }
            resources.retain(|r| !r.scope_logs.is_empty());
        }
    }
    rejected
}

fn exemplar_ids(data: &Option<metric::Data>) -> impl Iterator<Item = (&[u8], &[u8])> {
    let exemplars: Box<dyn Iterator<Item = &opentelemetry_proto::tonic::metrics::v1::Exemplar>> = match data {
        Some(metric::Data::Gauge(g)) => Box::new(g.data_points.iter().flat_map(|p| &p.exemplars)),
        Some(metric::Data::Sum(s)) => Box::new(s.data_points.iter().flat_map(|p| &p.exemplars)),
        Some(metric::Data::Histogram(h)) => Box::new(h.data_points.iter().flat_map(|p| &p.exemplars)),
        Some(metric::Data::ExponentialHistogram(h)) => Box::new(h.data_points.iter().flat_map(|p| &p.exemplars)),
        Some(metric::Data::Summary(_)) | None => Box::new(std::iter::empty()),
    };
    exemplars.map(|e| (e.trace_id.as_slice(), e.span_id.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::testdata::*;

    #[test]
    fn valid_data_is_untouched() {
        for mut p in [traces(2, 2, 3), metrics(2, 2), logs(4)] {
            let before = p.clone();
            assert_eq!(validate(&mut p), Rejected::default());
            assert_eq!(p, before);
        }
    }

    #[test]
    fn bad_span_ids_are_removed_and_explained() {
        let mut p = traces(1, 1, 3);
        if let Payload::Traces(rs) = &mut p {
            rs[0].scope_spans[0].spans[0].trace_id = vec![1; 15];
            rs[0].scope_spans[0].spans[2].span_id = vec![0; 8];
        }
        let r = validate(&mut p);
        assert_eq!(r.count, 2);
        assert_eq!(p.items(), 1);
        assert_eq!(
            r.message(),
            "2 invalid items rejected; first: span \"span-1\": trace_id must be 16 bytes, not all zero (got 15)"
        );
    }

    #[test]
    fn all_bad_leaves_an_empty_payload() {
        let mut p = logs(2);
        if let Payload::Logs(rl) = &mut p {
            for l in &mut rl[0].scope_logs[0].log_records {
                l.span_id = vec![7; 3];
            }
        }
        let r = validate(&mut p);
        assert_eq!(r.count, 2);
        assert!(p.is_empty(), "empty scopes and resources are removed too");
    }

    #[test]
    fn nameless_metric_counts_its_points() {
        let mut p = metrics(2, 4);
        if let Payload::Metrics(rm) = &mut p {
            rm[0].scope_metrics[0].metrics[1].name.clear();
        }
        assert_eq!(validate(&mut p).count, 4);
        assert_eq!(p.items(), 4);
    }
}
