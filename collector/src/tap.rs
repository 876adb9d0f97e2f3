//! The live tap: clients subscribe with a filter and receive matching
//! telemetry as it is accepted.
//!
//! The main path pays one atomic load when nobody is watching. With
//! subscribers, matching items are copied and offered to each subscriber's
//! small buffer with `try_send`; a full buffer drops the event for that
//! subscriber and counts it, so a slow tap client never slows ingestion.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::Stream;
use otlp_fleet::tap::v1::tap_server::Tap;
use otlp_fleet::tap::v1::{Signal as TapSignal, TapEvent, WatchRequest};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::encoded::Telemetry;
use crate::pipeline::processor::{attrs_match, retain_items};
use crate::signal::{Payload, Signal};

/// Events buffered per subscriber before dropping.
pub const TAP_BUFFER: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub struct TapFilter {
    pub signals: Vec<Signal>,
    pub match_attributes: BTreeMap<String, String>,
    pub sample_rate: f64,
}

impl TryFrom<WatchRequest> for TapFilter {
    type Error = Status;

    fn try_from(r: WatchRequest) -> Result<Self, Status> {
        let signals = r
            .signals()
            .map(|s| match s {
                TapSignal::Traces => Ok(Signal::Traces),
                TapSignal::Metrics => Ok(Signal::Metrics),
                TapSignal::Logs => Ok(Signal::Logs),
                TapSignal::Unspecified => Err(Status::invalid_argument("signal must be traces, metrics or logs")),
            })
            .collect::<Result<_, _>>()?;
        if !(0.0..=1.0).contains(&r.sample_rate) || r.sample_rate.is_nan() {
            return Err(Status::invalid_argument("sample_rate must be in [0, 1]"));
        }
        let sample_rate = if r.sample_rate == 0.0 { 1.0 } else { r.sample_rate };
        Ok(Self { signals, match_attributes: r.match_attributes.into_iter().collect(), sample_rate })
    }
}

impl TapFilter {
    /// The matching part of `payload`, if any.
    fn select(&self, payload: &Payload) -> Option<Payload> {
        if !self.signals.is_empty() && !self.signals.contains(&payload.signal()) {
            return None;
        }
        if self.sample_rate < 1.0 && rand::random::<f64>() >= self.sample_rate {
            return None;
        }
        let mut copy = payload.clone();
        if !self.match_attributes.is_empty() {
            retain_items(&mut copy, |resource, _, attrs| {
                self.match_attributes.iter().all(|(k, v)| {
                    let one = BTreeMap::from([(k.clone(), v.clone())]);
                    attrs_match(resource, &one) || attrs_match(attrs, &one)
                })
            });
        }
        (!copy.is_empty()).then_some(copy)
    }
}

#[derive(Debug)]
struct Subscriber {
    filter: RwLock<TapFilter>,
    tx: mpsc::Sender<Result<TapEvent, Status>>,
    dropped: AtomicU64,
}

#[derive(Debug)]
pub struct TapHub {
    subscribers: RwLock<Vec<Arc<Subscriber>>>,
    count: AtomicUsize,
    gauge: Gauge,
    dropped: Counter,
}

impl TapHub {
    pub fn new(gauge: Gauge, dropped: Counter) -> Arc<Self> {
        Arc::new(Self { subscribers: RwLock::default(), count: AtomicUsize::new(0), gauge, dropped })
    }

    /// Offers accepted data to every subscriber.
    pub fn publish(&self, data: &Telemetry) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let payload = match data.decoded() {
            Ok(payload) => payload,
            Err(e) => return tracing::error!(error = %e, "tap: accepted data did not decode"),
        };
        let payload = &*payload;
        let subscribers = self.subscribers.read().expect("tap lock").clone();
        let mut gone = false;
        for sub in &subscribers {
            if sub.tx.is_closed() {
                gone = true;
                continue;
            }
            let Some(selected) = sub.filter.read().expect("tap filter lock").select(payload) else { continue };
            let signal = match selected.signal() {
                Signal::Traces => TapSignal::Traces,
                Signal::Metrics => TapSignal::Metrics,
                Signal::Logs => TapSignal::Logs,
            };
            let dropped = sub.dropped.swap(0, Ordering::Relaxed);
            let event = TapEvent {
                signal: signal as i32,
                otlp: selected.encode_request(),
                dropped,
                time_unix_nano: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
            };
            if sub.tx.try_send(Ok(event)).is_err() {
                sub.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
                self.dropped.inc();
            }
        }
        if gone {
            let mut subs = self.subscribers.write().expect("tap lock");
            subs.retain(|s| !s.tx.is_closed());
            self.count.store(subs.len(), Ordering::Relaxed);
            self.gauge.set(subs.len() as i64);
        }
    }

    fn subscribe(&self, filter: TapFilter) -> (Arc<Subscriber>, mpsc::Receiver<Result<TapEvent, Status>>) {
        let (tx, rx) = mpsc::channel(TAP_BUFFER);
        let sub = Arc::new(Subscriber { filter: RwLock::new(filter), tx, dropped: AtomicU64::new(0) });
        let mut subs = self.subscribers.write().expect("tap lock");
        subs.push(sub.clone());
        self.count.store(subs.len(), Ordering::Relaxed);
        self.gauge.set(subs.len() as i64);
        (sub, rx)
    }
}

/// The `otlpfleet.tap.v1.Tap` gRPC service.
#[derive(Debug, Clone)]
pub struct TapService {
    hub: Arc<TapHub>,
}

impl TapService {
    pub fn new(hub: Arc<TapHub>) -> Self {
        Self { hub }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<TapEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Tap for TapService {
    type WatchStream = EventStream;

    async fn watch(&self, request: Request<Streaming<WatchRequest>>) -> Result<Response<EventStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("send a WatchRequest first"))?;
        let (sub, rx) = self.hub.subscribe(TapFilter::try_from(first)?);
        // Later requests replace the filter; an invalid one ends the tap with its error.
        tokio::spawn(async move {
            while let Ok(Some(next)) = inbound.message().await {
                match TapFilter::try_from(next) {
                    Ok(filter) => *sub.filter.write().expect("tap filter lock") = filter,
                    Err(status) => {
                        let _ = sub.tx.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        let stream = ReceiverStream::new(rx).map(|e| e);
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::testdata::*;

    fn hub() -> Arc<TapHub> {
        TapHub::new(Gauge::default(), Counter::default())
    }

    fn filter(signals: Vec<Signal>, attrs: &[(&str, &str)]) -> TapFilter {
        TapFilter {
            signals,
            match_attributes: attrs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            sample_rate: 1.0,
        }
    }

    #[test]
    fn matches_resource_or_item_attributes() {
        let p = traces(2, 1, 3);
        let f = filter(vec![Signal::Traces], &[("service.name", "svc-1"), ("i", "2")]);
        assert_eq!(f.select(&p).unwrap().items(), 1);
        assert!(filter(vec![Signal::Logs], &[]).select(&p).is_none());
    }

    #[test]
    fn slow_subscriber_loses_events_and_they_are_counted() {
        let hub = hub();
        let (_sub, mut rx) = hub.subscribe(filter(vec![], &[]));
        for _ in 0..TAP_BUFFER + 5 {
            hub.publish(&Telemetry::Decoded(logs(1)));
        }
        assert_eq!(hub.dropped.get(), 5);
        for _ in 0..TAP_BUFFER {
            rx.try_recv().unwrap().unwrap();
        }
        hub.publish(&Telemetry::Decoded(logs(1)));
        let next = rx.try_recv().unwrap().unwrap();
        assert_eq!(next.dropped, 5, "the next event tells the client what it missed");
    }

    #[test]
    fn closed_subscribers_are_removed() {
        let hub = hub();
        let (_sub, rx) = hub.subscribe(filter(vec![], &[]));
        drop(rx);
        hub.publish(&Telemetry::Decoded(logs(1)));
        assert_eq!(hub.count.load(Ordering::Relaxed), 0);
    }
}
