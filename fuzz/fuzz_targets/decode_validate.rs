//! The collector's request path, fed exactly the bytes a client sends.
//!
//! Input: `[selector, split, body...]`.
//! - `selector & 3`: the signal (0 traces, 1 metrics, 2 logs, 3 traces);
//!   `selector & 4`: OTLP-JSON instead of protobuf (the HTTP receiver's two
//!   content types; gRPC decodes the same protobuf); `selector >> 3`: which
//!   processors run (attributes, resource, filter include, filter exclude).
//! - `split`: the batch size `split_front` cuts with (1..=16).
//! - `body`: the request body, after any decompression.
//!
//! Decoding may fail; nothing after it may panic, and these must hold:
//! validation only removes, is idempotent and counts what it removed;
//! processors never add items; the protobuf encoding is as long as
//! `encoded_len` says and decodes back to itself; the OTLP-JSON the file
//! exporter writes decodes back to the same data; `split_front` hands out
//! every item exactly once and always makes progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otlp_collector::config::{ActionKind, AttributeAction, AttributeValue, FilterConfig, FilterMatch};
use otlp_collector::pipeline::Processor;
use otlp_collector::signal::{Payload, Signal, decode_request};
use otlp_collector::validate::validate;
use prometheus_client::metrics::counter::Counter;

fn json(signal: Signal, body: &[u8]) -> Option<Payload> {
    Some(match signal {
        Signal::Traces => serde_json::from_slice::<ExportTraceServiceRequest>(body).ok()?.into(),
        Signal::Metrics => serde_json::from_slice::<ExportMetricsServiceRequest>(body).ok()?.into(),
        Signal::Logs => serde_json::from_slice::<ExportLogsServiceRequest>(body).ok()?.into(),
    })
}

fn action(key: &str, action: ActionKind, value: Option<AttributeValue>) -> AttributeAction {
    AttributeAction { key: key.into(), action, value }
}

fn processors(mask: u8) -> Vec<Processor> {
    let mut out = Vec::new();
    if mask & 1 != 0 {
        out.push(Processor::Attributes(vec![
            action("i", ActionKind::Update, Some(AttributeValue::Int(7))),
            action("fuzz", ActionKind::Insert, Some(AttributeValue::Bool(true))),
            action("k", ActionKind::Upsert, Some(AttributeValue::Double(f64::NAN))),
            action("http.method", ActionKind::Delete, None),
        ]));
    }
    if mask & 2 != 0 {
        out.push(Processor::Resource(vec![
            action("service.name", ActionKind::Upsert, Some(AttributeValue::String("svc".into()))),
            action("host.name", ActionKind::Delete, None),
            action("env", ActionKind::Insert, None),
        ]));
    }
    let matcher = || FilterMatch {
        names: vec!["span-1".into(), "m0".into(), "INFO".into()],
        attributes: [("i".to_owned(), "1".to_owned())].into(),
        resource_attributes: [("service.name".to_owned(), "svc".to_owned())].into(),
    };
    if mask & 12 != 0 {
        let config = FilterConfig {
            include: (mask & 4 != 0).then(|| FilterMatch { names: vec![], ..matcher() }),
            exclude: (mask & 8 != 0).then(matcher),
        };
        out.push(Processor::Filter { config, dropped: Counter::default() });
    }
    out
}

/// The protobuf Export request the payload stands for; `Payload`'s
/// `PartialEq` is no use for comparing, since NaN != NaN.
fn bytes(p: &Payload) -> Vec<u8> {
    p.encode_request().to_vec()
}

fn check(signal: Signal, mut payload: Payload, mask: u8, n: usize) {
    assert_eq!(payload.signal(), signal);

    let before = payload.items();
    let rejected = validate(&mut payload);
    let after = payload.items();
    assert!(after <= before);
    match signal {
        // A rejected metric counts as its data points, at least one.
        Signal::Metrics => assert!(rejected.count >= before - after),
        _ => assert_eq!(rejected.count, before - after),
    }
    assert_eq!(rejected.count == 0, rejected.message().is_empty());
    let valid = bytes(&payload);
    assert_eq!(validate(&mut payload).count, 0, "validation is idempotent");
    assert_eq!(bytes(&payload), valid);

    for p in processors(mask) {
        let before = payload.items();
        p.apply(&mut payload);
        let after = payload.items();
        match p {
            Processor::Filter { dropped, .. } => {
                assert!(after <= before);
                assert_eq!(dropped.get(), (before - after) as u64);
            }
            _ => assert_eq!(after, before),
        }
    }

    // Protobuf, as the OTLP exporter and the live tap send it.
    let encoded = payload.encode_request();
    assert_eq!(encoded.len(), payload.encoded_len());
    let decoded = decode_request(signal, &encoded).expect("our own encoding decodes");
    assert_eq!(bytes(&decoded), encoded.as_ref());

    // OTLP-JSON, as the file exporter writes it. Known limitation of
    // opentelemetry-proto's serde (see fuzz/README.md): NaN and ±Infinity are
    // written as `null`, which reads back as an absent optional double, a
    // metric without data, or not at all; and an AnyValue `stringValueStrindex`
    // is written but not read back. Otherwise the round trip is exact.
    let text = payload.to_json();
    match json(signal, text.as_bytes()) {
        // Compared by `Debug`: NaN payload bits are not kept (nor meant to be).
        Some(back) if !text.contains("null") && !text.contains("ValueStrindex") => {
            assert_eq!(format!("{back:?}"), format!("{payload:?}"), "JSON round trip changes the data: {text}")
        }
        Some(back) => {
            // What was lost is lost once: the second round trip is exact.
            let again = back.to_json();
            let back2 = json(signal, again.as_bytes()).unwrap_or_else(|| panic!("JSON read back twice: {again}"));
            assert_eq!(back2.to_json(), again, "JSON round trip is not stable");
        }
        None => assert!(text.contains("null") || text.contains("ValueStrindex"), "our own JSON does not decode: {text}"),
    }

    // Batching: every item exactly once, in order, and progress every time.
    let total = payload.items();
    let mut rest = payload;
    let mut joined = Payload::empty(signal);
    let mut seen = 0;
    let mut rounds = 0;
    while !rest.is_empty() {
        rounds += 1;
        assert!(rounds <= total + 64 * 1024, "split_front makes no progress");
        let head = rest.split_front(n);
        assert!(!head.is_empty(), "split_front({n}) of a non-empty payload returned nothing");
        if signal != Signal::Metrics {
            assert!(head.items() <= n);
        }
        seen += head.items();
        joined.append(head);
    }
    assert_eq!(seen, total);
    assert_eq!(joined.items(), total);
}

fuzz_target!(|data: &[u8]| {
    let [selector, split, body @ ..] = data else { return };
    let signal = match selector & 3 {
        1 => Signal::Metrics,
        2 => Signal::Logs,
        _ => Signal::Traces,
    };
    let payload = if selector & 4 != 0 { json(signal, body) } else { decode_request(signal, body).ok() };
    if let Some(payload) = payload {
        check(signal, payload, selector >> 3, usize::from(split % 16) + 1);
    }
});
