//! Telemetry as it arrived: validated wire bytes, one slice per resource.
//!
//! A request whose bytes pass [`otlp_fleet::wire::scan`] is never decoded on
//! its way through a pipeline without processors: batching concatenates
//! resources (a concatenation of encoded Export requests is an Export request)
//! and the `otlp` exporter sends the same bytes on. Only the tap, the `debug`
//! and `file` exporters and the processors that edit items decode it.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use otlp_fleet::wire::{self, Request};
use prost::{DecodeError, Message};

use crate::signal::{Payload, Signal, decode_request, points_in, records_in, spans_in};

/// One encoded resource (`ResourceSpans`, `ResourceMetrics` or `ResourceLogs`).
#[derive(Debug, Clone, PartialEq)]
struct Resource {
    body: Bytes,
    items: usize,
}

/// Validated, encoded telemetry of one signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    signal: Signal,
    resources: Vec<Resource>,
    items: usize,
}

/// The bytes of field 1 of an Export request: its key (tag 1, length-delimited).
const RESOURCE_KEY: u8 = 0x0a;

impl Encoded {
    pub fn empty(signal: Signal) -> Self {
        Self { signal, resources: Vec::new(), items: 0 }
    }

    /// Takes an encoded Export request if it is plainly valid; `None` means
    /// it must be decoded (and then validated or refused).
    pub fn scan(signal: Signal, request: &Bytes) -> Option<Self> {
        let kind = match signal {
            Signal::Traces => Request::Traces,
            Signal::Metrics => Request::Metrics,
            Signal::Logs => Request::Logs,
        };
        let entries = wire::scan(kind, request).ok()?;
        let items = entries.iter().map(|e| e.items).sum();
        let resources =
            entries.into_iter().map(|e| Resource { body: request.slice(e.range), items: e.items }).collect();
        Some(Self { signal, resources, items })
    }

    /// Encodes decoded telemetry, resource by resource.
    pub fn encode(payload: &Payload) -> Self {
        fn each<M: Message>(v: &[M], items: fn(&M) -> usize) -> Vec<Resource> {
            v.iter().map(|m| Resource { body: m.encode_to_vec().into(), items: items(m) }).collect()
        }
        let resources = match payload {
            Payload::Traces(v) => each(v, spans_in),
            Payload::Metrics(v) => each(v, points_in),
            Payload::Logs(v) => each(v, records_in),
        };
        let items = resources.iter().map(|r| r.items).sum();
        Self { signal: payload.signal(), resources, items }
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Spans, metric data points or log records.
    pub fn items(&self) -> usize {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Size of the Export request these resources make.
    pub fn encoded_len(&self) -> usize {
        self.resources.iter().map(|r| 1 + prost::encoding::encoded_len_varint(r.body.len() as u64) + r.body.len()).sum()
    }

    /// The Export request, as chunks to write one after another (no copy of
    /// the resources' bytes).
    pub fn request_chunks(&self) -> Vec<Bytes> {
        let mut chunks = Vec::with_capacity(self.resources.len() * 2);
        for r in &self.resources {
            let mut key = BytesMut::with_capacity(11);
            key.put_u8(RESOURCE_KEY);
            prost::encoding::encode_varint(r.body.len() as u64, &mut key);
            chunks.push(key.freeze());
            chunks.push(r.body.clone());
        }
        chunks
    }

    /// The resources decoded.
    pub fn decode(&self) -> Result<Payload, DecodeError> {
        fn each<M: Message + Default>(resources: &[Resource]) -> Result<Vec<M>, DecodeError> {
            resources.iter().map(|r| M::decode(r.body.clone())).collect()
        }
        Ok(match self.signal {
            Signal::Traces => Payload::Traces(each::<ResourceSpans>(&self.resources)?),
            Signal::Metrics => Payload::Metrics(each::<ResourceMetrics>(&self.resources)?),
            Signal::Logs => Payload::Logs(each::<ResourceLogs>(&self.resources)?),
        })
    }

    /// Moves everything from `other` (of the same signal) to the end.
    pub fn append(&mut self, mut other: Encoded) {
        debug_assert_eq!(self.signal, other.signal);
        self.items += other.items;
        self.resources.append(&mut other.resources);
    }

    /// Removes and returns the first `n` items. Whole resources move as they
    /// are; the one resource that straddles `n` is decoded and split the way
    /// [`Payload::split_front`] splits (between metrics, never inside one).
    pub fn split_front(&mut self, n: usize) -> Encoded {
        let mut head = Encoded::empty(self.signal);
        let mut taken = 0;
        let fits = self.resources.iter().take_while(|r| {
            taken += r.items;
            taken <= n
        });
        let fits = fits.count();
        for r in self.resources.drain(..fits) {
            head.items += r.items;
            head.resources.push(r);
        }
        if head.items < n && !self.resources.is_empty() {
            let first = self.resources.remove(0);
            let one = Encoded { signal: self.signal, items: first.items, resources: vec![first] };
            match one.decode() {
                Ok(mut decoded) => {
                    head.append(Encoded::encode(&decoded.split_front(n - head.items)));
                    self.resources.splice(0..0, Encoded::encode(&decoded).resources);
                }
                // Validated bytes always decode; were they not to, the batch
                // is sent larger rather than anything lost.
                Err(e) => {
                    tracing::error!(error = %e, "a validated resource did not decode; batch not split");
                    head.append(one);
                }
            }
        }
        self.items -= head.items;
        head
    }
}

/// Telemetry in one of its two forms.
#[derive(Debug, Clone, PartialEq)]
pub enum Telemetry {
    Decoded(Payload),
    Encoded(Encoded),
}

impl Telemetry {
    /// An encoded Export request: kept encoded when plainly valid, decoded
    /// otherwise (for validation to repair or refuse).
    pub fn from_request(signal: Signal, request: &Bytes) -> Result<Self, DecodeError> {
        match Encoded::scan(signal, request) {
            Some(encoded) => Ok(Telemetry::Encoded(encoded)),
            None => decode_request(signal, request).map(Telemetry::Decoded),
        }
    }

    pub fn signal(&self) -> Signal {
        match self {
            Telemetry::Decoded(p) => p.signal(),
            Telemetry::Encoded(e) => e.signal(),
        }
    }

    pub fn items(&self) -> usize {
        match self {
            Telemetry::Decoded(p) => p.items(),
            Telemetry::Encoded(e) => e.items(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Telemetry::Decoded(p) => p.is_empty(),
            Telemetry::Encoded(e) => e.is_empty(),
        }
    }

    /// Number of resources (`ResourceSpans`, ...).
    pub fn resources(&self) -> usize {
        match self {
            Telemetry::Decoded(Payload::Traces(v)) => v.len(),
            Telemetry::Decoded(Payload::Metrics(v)) => v.len(),
            Telemetry::Decoded(Payload::Logs(v)) => v.len(),
            Telemetry::Encoded(e) => e.resources.len(),
        }
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            Telemetry::Decoded(p) => p.encoded_len(),
            Telemetry::Encoded(e) => e.encoded_len(),
        }
    }

    /// The decoded form, decoding if needed.
    pub fn decoded(&self) -> Result<Cow<'_, Payload>, DecodeError> {
        match self {
            Telemetry::Decoded(p) => Ok(Cow::Borrowed(p)),
            Telemetry::Encoded(e) => e.decode().map(Cow::Owned),
        }
    }

    pub fn into_decoded(self) -> Result<Payload, DecodeError> {
        match self {
            Telemetry::Decoded(p) => Ok(p),
            Telemetry::Encoded(e) => e.decode(),
        }
    }

    /// The encoded form, encoding if needed.
    pub fn to_encoded(&self) -> Encoded {
        match self {
            Telemetry::Decoded(p) => Encoded::encode(p),
            Telemetry::Encoded(e) => e.clone(),
        }
    }

    /// The encoded form, encoding if needed.
    pub fn into_encoded(self) -> Encoded {
        match self {
            Telemetry::Decoded(p) => Encoded::encode(&p),
            Telemetry::Encoded(e) => e,
        }
    }

    /// The Export request as chunks to send one after another.
    pub fn request_chunks(&self) -> Vec<Bytes> {
        match self {
            Telemetry::Decoded(p) => vec![p.encode_request()],
            Telemetry::Encoded(e) => e.request_chunks(),
        }
    }

    /// Moves everything from `other` (of the same signal) to the end. Mixed
    /// forms end up encoded (the form that cannot fail to convert).
    pub fn append(&mut self, other: Telemetry) {
        match (&mut *self, other) {
            (Telemetry::Decoded(a), Telemetry::Decoded(b)) => a.append(b),
            (Telemetry::Encoded(a), other) => a.append(other.into_encoded()),
            (Telemetry::Decoded(a), Telemetry::Encoded(b)) => {
                let mut encoded = Encoded::encode(a);
                encoded.append(b);
                *self = Telemetry::Encoded(encoded);
            }
        }
    }

    /// Removes and returns the first `n` items (see [`Payload::split_front`]).
    pub fn split_front(&mut self, n: usize) -> Telemetry {
        match self {
            Telemetry::Decoded(p) => Telemetry::Decoded(p.split_front(n)),
            Telemetry::Encoded(e) => Telemetry::Encoded(e.split_front(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::testdata::*;

    fn request(p: &Payload) -> Bytes {
        p.encode_request()
    }

    #[test]
    fn valid_requests_stay_encoded_with_their_counts() {
        for p in [traces(2, 2, 3), metrics(3, 4), logs(5)] {
            let e = Encoded::scan(p.signal(), &request(&p)).expect("plainly valid");
            assert_eq!(e.items(), p.items());
            assert_eq!(e.decode().unwrap(), p);
            assert_eq!(e.encoded_len(), p.encoded_len());
            assert_eq!(e.request_chunks().concat(), request(&p).to_vec());
            assert_eq!(Encoded::encode(&p), e);
        }
    }

    #[test]
    fn invalid_items_go_the_decoded_way() {
        let mut p = traces(1, 1, 2);
        if let Payload::Traces(rs) = &mut p {
            rs[0].scope_spans[0].spans[0].span_id = vec![0; 8];
        }
        assert!(Encoded::scan(Signal::Traces, &request(&p)).is_none());
        assert!(matches!(Telemetry::from_request(Signal::Traces, &request(&p)), Ok(Telemetry::Decoded(_))));
        assert!(Telemetry::from_request(Signal::Traces, &Bytes::from_static(&[0x0a, 0x05])).is_err());
    }

    #[test]
    fn split_matches_the_decoded_split() {
        // 3 resources × 2 scopes × 5 spans, taken 7 at a time, as the decoded form would be.
        let original = traces(3, 2, 5);
        let mut decoded = original.clone();
        let mut encoded = Encoded::encode(&original);
        while !decoded.is_empty() {
            let want = decoded.split_front(7);
            let got = encoded.split_front(7);
            assert_eq!(got.decode().unwrap(), want);
            assert_eq!(got.items(), want.items());
            assert_eq!(encoded.items(), decoded.items());
        }
        assert!(encoded.is_empty());
    }

    #[test]
    fn append_concatenates_and_converts() {
        let mut a = Telemetry::Encoded(Encoded::encode(&logs(2)));
        a.append(Telemetry::Decoded(logs(3)));
        assert_eq!(a.items(), 5);
        let mut expected = logs(2);
        expected.append(logs(3));
        assert_eq!(a.decoded().unwrap().into_owned(), expected);
    }
}
