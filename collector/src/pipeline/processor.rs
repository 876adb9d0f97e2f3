//! Processors that edit or drop items in place: `attributes`, `resource`,
//! `filter`. (`batch` is the pipeline task itself, see `batch.rs`.)

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use prometheus_client::metrics::counter::Counter;

use crate::config::{ActionKind, AttributeAction, AttributeValue, FilterConfig, FilterMatch};
use crate::signal::Payload;

#[derive(Debug, Clone)]
pub enum Processor {
    /// Edits item attributes (spans, data points, log records).
    Attributes(Vec<AttributeAction>),
    /// Edits resource attributes.
    Resource(Vec<AttributeAction>),
    Filter {
        config: FilterConfig,
        dropped: Counter,
    },
}

impl Processor {
    pub fn apply(&self, payload: &mut Payload) {
        match self {
            Processor::Resource(actions) => for_each_resource(payload, |attrs| edit(attrs, actions)),
            Processor::Attributes(actions) => for_each_item_attributes(payload, |attrs| edit(attrs, actions)),
            Processor::Filter { config, dropped } => {
                let before = payload.items();
                filter(payload, config);
                dropped.inc_by((before - payload.items()) as u64);
            }
        }
    }
}

fn to_any(v: &AttributeValue) -> AnyValue {
    AnyValue {
        value: Some(match v {
            AttributeValue::Bool(b) => any_value::Value::BoolValue(*b),
            AttributeValue::Int(i) => any_value::Value::IntValue(*i),
            AttributeValue::Double(d) => any_value::Value::DoubleValue(*d),
            AttributeValue::String(s) => any_value::Value::StringValue(s.clone()),
        }),
    }
}

/// Applies attribute actions to one attribute list.
pub fn edit(attrs: &mut Vec<KeyValue>, actions: &[AttributeAction]) {
    for a in actions {
        let pos = attrs.iter().position(|kv| kv.key == a.key);
        match (a.action, pos) {
            (ActionKind::Delete, Some(i)) => {
                attrs.remove(i);
            }
            (ActionKind::Update | ActionKind::Upsert, Some(i)) => {
                attrs[i].value = a.value.as_ref().map(to_any);
            }
            (ActionKind::Insert | ActionKind::Upsert, None) => {
                attrs.push(KeyValue { key: a.key.clone(), value: a.value.as_ref().map(to_any), ..Default::default() })
            }
            _ => {}
        }
    }
}

fn for_each_resource(payload: &mut Payload, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match payload {
        Payload::Traces(v) => {
            v.iter_mut().for_each(|r| f(&mut r.resource.get_or_insert_with(Default::default).attributes))
        }
        Payload::Metrics(v) => {
            v.iter_mut().for_each(|r| f(&mut r.resource.get_or_insert_with(Default::default).attributes))
        }
        Payload::Logs(v) => {
            v.iter_mut().for_each(|r| f(&mut r.resource.get_or_insert_with(Default::default).attributes))
        }
    }
}

fn for_each_item_attributes(payload: &mut Payload, mut f: impl FnMut(&mut Vec<KeyValue>)) {
    match payload {
        Payload::Traces(v) => {
            v.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans).for_each(|s| f(&mut s.attributes))
        }
        Payload::Logs(v) => v
            .iter_mut()
            .flat_map(|r| &mut r.scope_logs)
            .flat_map(|s| &mut s.log_records)
            .for_each(|l| f(&mut l.attributes)),
        Payload::Metrics(v) => {
            v.iter_mut().flat_map(|r| &mut r.scope_metrics).flat_map(|s| &mut s.metrics).for_each(|m| {
                retain_points(&mut m.data, |attrs| {
                    f(attrs);
                    true
                })
            })
        }
    }
}

/// Visits the attributes of every data point, keeping those for which `keep` is true.
fn retain_points(data: &mut Option<metric::Data>, mut keep: impl FnMut(&mut Vec<KeyValue>) -> bool) {
    match data {
        Some(metric::Data::Gauge(g)) => g.data_points.retain_mut(|p| keep(&mut p.attributes)),
        Some(metric::Data::Sum(s)) => s.data_points.retain_mut(|p| keep(&mut p.attributes)),
        Some(metric::Data::Histogram(h)) => h.data_points.retain_mut(|p| keep(&mut p.attributes)),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.retain_mut(|p| keep(&mut p.attributes)),
        Some(metric::Data::Summary(s)) => s.data_points.retain_mut(|p| keep(&mut p.attributes)),
        None => {}
    }
}

/// The string form of an attribute value, for matching.
pub fn value_string(v: &Option<AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

fn attr_is(attrs: &[KeyValue], key: &str, want: &str) -> bool {
    attrs.iter().any(|kv| {
        kv.key == key
            && match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s == want,
                _ => value_string(&kv.value).as_deref() == Some(want),
            }
    })
}

/// Whether every entry of `want` is among `attrs`.
pub fn attrs_match(attrs: &[KeyValue], want: &std::collections::BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| attr_is(attrs, k, v))
}

fn matches(m: &FilterMatch, resource: &[KeyValue], name: &str, attrs: &[KeyValue]) -> bool {
    (m.names.is_empty() || m.names.iter().any(|n| n == name))
        && attrs_match(attrs, &m.attributes)
        && attrs_match(resource, &m.resource_attributes)
}

fn keep(config: &FilterConfig, resource: &[KeyValue], name: &str, attrs: &[KeyValue]) -> bool {
    config.include.as_ref().is_none_or(|m| matches(m, resource, name, attrs))
        && !config.exclude.as_ref().is_some_and(|m| matches(m, resource, name, attrs))
}

fn filter(payload: &mut Payload, config: &FilterConfig) {
    retain_items(payload, |resource, name, attrs| keep(config, resource, name, attrs));
}

/// Keeps the items (spans, data points, log records) for which `keep(resource
/// attributes, name, item attributes)` is true, then drops what became empty.
/// The name is the span name, the metric name or the log severity text.
pub fn retain_items(payload: &mut Payload, mut keep: impl FnMut(&[KeyValue], &str, &[KeyValue]) -> bool) {
    fn res(r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> &[KeyValue] {
        r.as_ref().map_or(&[], |r| r.attributes.as_slice())
    }
    match payload {
        Payload::Traces(v) => {
            for rs in v.iter_mut() {
                let res = res(&rs.resource);
                for ss in &mut rs.scope_spans {
                    ss.spans.retain(|s| keep(res, &s.name, &s.attributes));
                }
                rs.scope_spans.retain(|s| !s.spans.is_empty());
            }
            v.retain(|r| !r.scope_spans.is_empty());
        }
        Payload::Logs(v) => {
            for rl in v.iter_mut() {
                let res = res(&rl.resource);
                for sl in &mut rl.scope_logs {
                    sl.log_records.retain(|l| keep(res, &l.severity_text, &l.attributes));
                }
                rl.scope_logs.retain(|s| !s.log_records.is_empty());
            }
            v.retain(|r| !r.scope_logs.is_empty());
        }
        Payload::Metrics(v) => {
            for rm in v.iter_mut() {
                let res = res(&rm.resource);
                for sm in &mut rm.scope_metrics {
                    for m in &mut sm.metrics {
                        let name = &m.name;
                        retain_points(&mut m.data, |attrs| keep(res, name, attrs));
                    }
                    sm.metrics.retain(|m| crate::signal::data_points(&m.data) > 0);
                }
                rm.scope_metrics.retain(|s| !s.metrics.is_empty());
            }
            v.retain(|r| !r.scope_metrics.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::testdata::*;

    fn action(key: &str, action: ActionKind, value: Option<&str>) -> AttributeAction {
        AttributeAction { key: key.into(), action, value: value.map(|v| AttributeValue::String(v.into())) }
    }

    #[test]
    fn attribute_actions() {
        let mut attrs = vec![kv("a", "1"), kv("b", "2")];
        edit(
            &mut attrs,
            &[
                action("a", ActionKind::Insert, Some("x")), // present: untouched
                action("c", ActionKind::Insert, Some("3")),
                action("b", ActionKind::Update, Some("20")),
                action("z", ActionKind::Update, Some("no")), // absent: untouched
                action("d", ActionKind::Upsert, Some("4")),
                action("a", ActionKind::Delete, None),
            ],
        );
        assert_eq!(attrs, vec![kv("b", "20"), kv("c", "3"), kv("d", "4")]);
    }

    #[test]
    fn resource_processor_edits_resources_only() {
        let mut p = traces(2, 1, 1);
        Processor::Resource(vec![action("env", ActionKind::Upsert, Some("prod"))]).apply(&mut p);
        let Payload::Traces(rs) = &p else { unreachable!() };
        assert!(rs.iter().all(|r| attr_is(&r.resource.as_ref().unwrap().attributes, "env", "prod")));
        assert!(!attr_is(&rs[0].scope_spans[0].spans[0].attributes, "env", "prod"));
    }

    #[test]
    fn filter_drops_by_name_and_attribute_and_counts() {
        let dropped = Counter::default();
        let config = FilterConfig {
            exclude: Some(FilterMatch { names: vec!["span-2".into()], ..Default::default() }),
            include: Some(FilterMatch {
                resource_attributes: [("service.name".to_owned(), "svc-0".to_owned())].into(),
                ..Default::default()
            }),
        };
        let mut p = traces(2, 1, 3);
        Processor::Filter { config, dropped: dropped.clone() }.apply(&mut p);
        // svc-1 is not included; of svc-0's three spans, span-2 is excluded.
        assert_eq!(p.items(), 2);
        assert_eq!(dropped.get(), 4);
    }

    #[test]
    fn filter_metrics_by_point_attribute() {
        let config = FilterConfig {
            exclude: Some(FilterMatch { attributes: [("i".to_owned(), "0".to_owned())].into(), ..Default::default() }),
            include: None,
        };
        let mut p = metrics(2, 3);
        Processor::Filter { config, dropped: Counter::default() }.apply(&mut p);
        assert_eq!(p.items(), 4);
    }
}
