//! A validating walk over encoded OTLP export requests, without decoding them.
//!
//! Decoding a request into prost structs allocates for every attribute and
//! costs ~0.3 µs a metric point; most pipelines only batch and forward, and
//! need nothing but the item count and the assurance that the bytes are
//! well-formed OTLP. [`scan`] walks the wire format once, allocating nothing
//! but the list of resources, and checks everything the full decoder and the
//! collector's validation check: field wire types, lengths, varints, UTF-8 of
//! every string, and the ids, names and data the OTLP specification requires.
//!
//! It answers with the byte range and item count of each resource, or with
//! [`NeedsDecode`] when anything is unusual. It is never more lenient than the
//! full decoder: whatever it accepts, `prost` decodes, the collector's
//! validation leaves untouched, and the counts agree (a property checked by a
//! differential fuzz target and a test over its corpus). It is sometimes
//! stricter: groups, repeated singular fields at the levels validation looks
//! at, empty scopes and nesting deeper than [`MAX_DEPTH`] go to the full
//! decoder, which then accepts, repairs or explains the request.

use std::ops::Range;

/// The three OTLP export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Traces,
    Metrics,
    Logs,
}

/// One `ResourceSpans`/`ResourceMetrics`/`ResourceLogs` of a request: where its
/// encoding lies in the request (without the field key and length) and how
/// many spans, metric data points or log records it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceEntry {
    pub range: Range<usize>,
    pub items: usize,
}

/// The request is not plainly valid: decode it fully to accept it, repair it
/// or say what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsDecode;

type Walk<T = ()> = Result<T, NeedsDecode>;

/// Nesting the walk follows before it hands over to the full decoder (whose
/// limit is 100). OTLP's own structure is 7 deep; the rest is room for
/// nested attribute values.
pub const MAX_DEPTH: u32 = 64;

/// Walks an encoded export request of `kind`.
pub fn scan(kind: Request, request: &[u8]) -> Walk<Vec<ResourceEntry>> {
    let resource: fn(&[u8], u32) -> Walk<usize> = match kind {
        Request::Traces => resource_spans,
        Request::Metrics => resource_metrics,
        Request::Logs => resource_logs,
    };
    let mut entries = Vec::new();
    let mut r = Reader::new(request);
    while let Some((tag, value)) = r.field()? {
        match (tag, value) {
            (1, Value::Len(body)) => {
                let end = r.pos;
                entries.push(ResourceEntry { range: end - body.len()..end, items: resource(body, MAX_DEPTH - 1)? });
            }
            (1, _) => return Err(NeedsDecode),
            _ => {} // unknown fields are skipped, as prost does
        }
    }
    Ok(entries)
}

/// A field's value as the wire format carries it.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint,
    Fixed64,
    Fixed32,
    Len(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// A varint; one- and two-byte ones (tags, lengths of attributes) take
    /// the short way.
    #[inline(always)]
    fn varint(&mut self) -> Walk<u64> {
        match self.buf.get(self.pos..) {
            Some([b0, ..]) if *b0 < 0x80 => {
                self.pos += 1;
                Ok(u64::from(*b0))
            }
            Some([b0, b1, ..]) if *b1 < 0x80 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | u64::from(*b1) << 7)
            }
            _ => self.long_varint(),
        }
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Walk<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(NeedsDecode)?;
            self.pos += 1;
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(NeedsDecode);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(NeedsDecode)
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Walk<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.buf.len()).ok_or(NeedsDecode)?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// The next field, `None` at the end. Groups (deprecated, never in OTLP)
    /// and invalid keys are handed to the full decoder.
    #[inline(always)]
    fn field(&mut self) -> Walk<Option<(u32, Value<'a>)>> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        // A key is a u32 (so a tag has at most 29 bits), as prost requires.
        let key = u32::try_from(self.varint()?).map_err(|_| NeedsDecode)?;
        let tag = key >> 3;
        if tag == 0 {
            return Err(NeedsDecode);
        }
        let value = match key & 7 {
            0 => {
                self.varint()?;
                Value::Varint
            }
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| NeedsDecode)?;
                Value::Len(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed32
            }
            _ => return Err(NeedsDecode),
        };
        Ok(Some((tag, value)))
    }
}

/// What a field of a message must hold.
#[derive(Debug, Clone, Copy)]
enum Field {
    /// Not in the schema: skipped, as prost skips unknown fields.
    Unknown,
    /// Walked by the caller, which takes it only with the right wire type;
    /// anything reaching the schema check is the wrong one.
    Walked,
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    Str,
    Message(Msg),
    /// `repeated fixed64`/`double`: packed or one value per key.
    RepeatedFixed64,
    /// `repeated uint64`: packed or one value per key.
    RepeatedVarint,
}

/// The OTLP messages whose contents need no check beyond their schema.
#[derive(Debug, Clone, Copy)]
enum Msg {
    Resource,
    Scope,
    EntityRef,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    Event,
    SpanStatus,
    Buckets,
    ValueAtQuantile,
}

use Field::{Bytes, Fixed32, Fixed64, Message as M, RepeatedFixed64, RepeatedVarint, Str, Unknown, Varint, Walked};

impl Msg {
    /// Fields by tag number (index 0 is never a tag).
    fn fields(self) -> &'static [Field] {
        match self {
            Msg::Resource => &[Unknown, M(Msg::KeyValue), Varint, M(Msg::EntityRef)],
            Msg::Scope => &[Unknown, Str, Str, M(Msg::KeyValue), Varint],
            Msg::EntityRef => &[Unknown, Str, Str, Str, Str],
            Msg::KeyValue => &[Unknown, Str, M(Msg::AnyValue), Varint],
            Msg::AnyValue => {
                &[Unknown, Str, Varint, Varint, Fixed64, M(Msg::ArrayValue), M(Msg::KeyValueList), Bytes, Varint]
            }
            Msg::ArrayValue => &[Unknown, M(Msg::AnyValue)],
            Msg::KeyValueList => &[Unknown, M(Msg::KeyValue)],
            Msg::Event => &[Unknown, Fixed64, Str, M(Msg::KeyValue), Varint],
            // Tag 1 is reserved (the deprecated status code).
            Msg::SpanStatus => &[Unknown, Unknown, Str, Varint],
            Msg::Buckets => &[Unknown, Varint, RepeatedVarint],
            Msg::ValueAtQuantile => &[Unknown, Fixed64, Fixed64],
        }
    }
}

/// Checks one field against its schema entry.
#[inline]
fn check(fields: &[Field], tag: u32, value: Value<'_>, depth: u32) -> Walk {
    let field = fields.get(tag as usize).copied().unwrap_or(Unknown);
    match (field, value) {
        (Unknown, _)
        | (Varint, Value::Varint)
        | (Fixed64, Value::Fixed64)
        | (Fixed32, Value::Fixed32)
        | (Bytes, Value::Len(_))
        | (RepeatedFixed64, Value::Fixed64)
        | (RepeatedVarint, Value::Varint) => Ok(()),
        (Str, Value::Len(s)) => utf8(s),
        (M(msg), Value::Len(body)) => message(msg, body, depth),
        (RepeatedFixed64, Value::Len(packed)) if packed.len() % 8 == 0 => Ok(()),
        (RepeatedVarint, Value::Len(packed)) => {
            let mut r = Reader::new(packed);
            while r.pos < packed.len() {
                r.varint()?;
            }
            Ok(())
        }
        _ => Err(NeedsDecode),
    }
}

/// UTF-8, with ASCII (nearly every attribute) checked inline, eight bytes
/// at a time.
#[inline(always)]
fn utf8(s: &[u8]) -> Walk {
    let mut words = s.chunks_exact(8);
    let mut high = 0u64;
    for w in &mut words {
        high |= <[u8; 8]>::try_from(w).map_or(u64::MAX, u64::from_le_bytes);
    }
    for b in words.remainder() {
        high |= u64::from(*b);
    }
    if high & 0x8080_8080_8080_8080 == 0 || std::str::from_utf8(s).is_ok() { Ok(()) } else { Err(NeedsDecode) }
}

/// Walks a message whose fields need only their schema.
fn message(msg: Msg, body: &[u8], depth: u32) -> Walk {
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    match msg {
        Msg::KeyValue => return key_value(body, depth),
        Msg::AnyValue => return any_value(body, depth),
        _ => {}
    }
    let fields = msg.fields();
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        check(fields, tag, value, depth)?;
    }
    Ok(())
}

/// `KeyValue`, the most frequent message of all, with its usual fields
/// (a string key and a value) walked without the schema table.
#[inline(always)]
fn key_value(body: &[u8], depth: u32) -> Walk {
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match (tag, value) {
            (1, Value::Len(key)) => utf8(key)?,
            (2, Value::Len(v)) => any_value(v, depth.checked_sub(1).ok_or(NeedsDecode)?)?,
            _ => check(Msg::KeyValue.fields(), tag, value, depth)?,
        }
    }
    Ok(())
}

/// `AnyValue`, with a string value walked without the schema table.
#[inline(always)]
fn any_value(body: &[u8], depth: u32) -> Walk {
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match (tag, value) {
            (1, Value::Len(s)) => utf8(s)?,
            _ => check(Msg::AnyValue.fields(), tag, value, depth)?,
        }
    }
    Ok(())
}

/// A singular field that validation reads: a second occurrence (the decoder
/// keeps the last, or merges) is left to the full decoder.
#[inline]
fn once<'a>(slot: &mut Option<&'a [u8]>, value: Value<'a>) -> Walk {
    match (slot.is_none(), value) {
        (true, Value::Len(b)) => {
            *slot = Some(b);
            Ok(())
        }
        _ => Err(NeedsDecode),
    }
}

/// A trace or span id: `len` bytes, not all zero; or absent when `optional`.
#[inline]
fn id(value: Option<&[u8]>, len: usize, optional: bool) -> Walk {
    match value {
        None | Some([]) if optional => Ok(()),
        Some(id) if id.len() == len && id.iter().any(|b| *b != 0) => Ok(()),
        _ => Err(NeedsDecode),
    }
}

/// A resource or a scope, the two levels the three signals share: field 1
/// describes it (`head`: a `Resource` or an `InstrumentationScope`), field 2
/// holds its children, each walked by `child`, which returns the items it
/// counts for, and field 3 is its schema URL.
fn level(body: &[u8], depth: u32, head: Msg, child: fn(&[u8], u32) -> Walk<usize>) -> Walk<usize> {
    let fields = [Unknown, M(head), Walked, Str];
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let (mut items, mut children) = (0, 0);
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match (tag, value) {
            (2, Value::Len(c)) => {
                items += child(c, depth)?;
                children += 1;
            }
            _ => check(&fields, tag, value, depth)?,
        }
    }
    // Validation drops empty scopes and resources; the full decoder does that.
    if children == 0 { Err(NeedsDecode) } else { Ok(items) }
}

fn resource_spans(body: &[u8], depth: u32) -> Walk<usize> {
    level(body, depth, Msg::Resource, |s, depth| level(s, depth, Msg::Scope, span))
}

fn resource_metrics(body: &[u8], depth: u32) -> Walk<usize> {
    level(body, depth, Msg::Resource, |s, depth| level(s, depth, Msg::Scope, metric))
}

fn resource_logs(body: &[u8], depth: u32) -> Walk<usize> {
    level(body, depth, Msg::Resource, |s, depth| level(s, depth, Msg::Scope, log_record))
}

fn span(body: &[u8], depth: u32) -> Walk<usize> {
    const FIELDS: &[Field] = &[
        Unknown,
        Walked, // trace_id
        Walked, // span_id
        Str,    // trace_state
        Walked, // parent_span_id
        Str,    // name
        Varint,
        Fixed64,
        Fixed64,
        M(Msg::KeyValue),
        Varint,
        M(Msg::Event),
        Varint,
        Walked, // links
        Varint,
        M(Msg::SpanStatus),
        Fixed32, // flags
    ];
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let (mut trace_id, mut span_id, mut parent) = (None, None, None);
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match tag {
            1 => once(&mut trace_id, value)?,
            2 => once(&mut span_id, value)?,
            4 => once(&mut parent, value)?,
            13 => match value {
                Value::Len(l) => link(l, depth)?,
                _ => return Err(NeedsDecode),
            },
            _ => check(FIELDS, tag, value, depth)?,
        }
    }
    id(trace_id, 16, false)?;
    id(span_id, 8, false)?;
    // A parent id may be any 8 bytes, or none.
    match parent {
        None | Some([]) => {}
        Some(p) if p.len() == 8 => {}
        Some(_) => return Err(NeedsDecode),
    }
    Ok(1)
}

fn link(body: &[u8], depth: u32) -> Walk {
    const FIELDS: &[Field] = &[Unknown, Walked, Walked, Str, M(Msg::KeyValue), Varint, Fixed32];
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let (mut trace_id, mut span_id) = (None, None);
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match tag {
            1 => once(&mut trace_id, value)?,
            2 => once(&mut span_id, value)?,
            _ => check(FIELDS, tag, value, depth)?,
        }
    }
    id(trace_id, 16, false)?;
    id(span_id, 8, false)
}

fn log_record(body: &[u8], depth: u32) -> Walk<usize> {
    const FIELDS: &[Field] = &[
        Unknown,
        Fixed64, // time_unix_nano
        Varint,  // severity_number
        Str,     // severity_text
        Unknown,
        M(Msg::AnyValue), // body
        M(Msg::KeyValue),
        Varint,
        Fixed32, // flags
        Walked,  // trace_id
        Walked,  // span_id
        Fixed64, // observed_time_unix_nano
        Str,     // event_name
    ];
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let (mut trace_id, mut span_id) = (None, None);
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match tag {
            9 => once(&mut trace_id, value)?,
            10 => once(&mut span_id, value)?,
            _ => check(FIELDS, tag, value, depth)?,
        }
    }
    id(trace_id, 16, true)?;
    id(span_id, 8, true)?;
    Ok(1)
}

/// The kinds of metric data, by the `Metric` field that holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

/// A metric counts as its data points. It needs a name and data.
fn metric(body: &[u8], depth: u32) -> Walk<usize> {
    const FIELDS: &[Field] = &[
        Unknown,
        Walked, // name
        Str,    // description
        Str,    // unit
        Unknown,
        Walked, // gauge
        Unknown,
        Walked, // sum
        Unknown,
        Walked,           // histogram
        Walked,           // exponential histogram
        Walked,           // summary
        M(Msg::KeyValue), // metadata
    ];
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let mut name = None;
    let mut points = None;
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        let data = match tag {
            1 => {
                once(&mut name, value)?;
                continue;
            }
            5 => Data::Gauge,
            7 => Data::Sum,
            9 => Data::Histogram,
            10 => Data::ExponentialHistogram,
            11 => Data::Summary,
            _ => {
                check(FIELDS, tag, value, depth)?;
                continue;
            }
        };
        // A second data field replaces or merges into the first: the full decoder decides.
        match (points, value) {
            (None, Value::Len(d)) => points = Some(data_points(data, d, depth)?),
            _ => return Err(NeedsDecode),
        }
    }
    match name {
        Some(n) if !n.is_empty() => utf8(n)?,
        _ => return Err(NeedsDecode),
    }
    points.ok_or(NeedsDecode)
}

/// A `Gauge`, `Sum`, `Histogram`, `ExponentialHistogram` or `Summary`: its
/// data points are field 1, the rest are scalars.
fn data_points(data: Data, body: &[u8], depth: u32) -> Walk<usize> {
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let fields: &[Field] = match data {
        Data::Gauge | Data::Summary => &[Unknown, Walked],
        Data::Sum => &[Unknown, Walked, Varint, Varint],
        Data::Histogram | Data::ExponentialHistogram => &[Unknown, Walked, Varint],
    };
    let mut points = 0;
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match (tag, value) {
            (1, Value::Len(p)) => {
                data_point(data, p, depth)?;
                points += 1;
            }
            _ => check(fields, tag, value, depth)?,
        }
    }
    Ok(points)
}

fn data_point(data: Data, body: &[u8], depth: u32) -> Walk {
    const NUMBER: &[Field] = &[
        Unknown,
        Unknown,
        Fixed64, // start_time_unix_nano
        Fixed64, // time_unix_nano
        Fixed64, // as_double
        Walked,  // exemplars
        Fixed64, // as_int (sfixed64)
        M(Msg::KeyValue),
        Varint, // flags
    ];
    const HISTOGRAM: &[Field] = &[
        Unknown,
        Unknown,
        Fixed64,
        Fixed64,
        Fixed64, // count
        Fixed64, // sum
        RepeatedFixed64,
        RepeatedFixed64, // explicit_bounds
        Walked,          // exemplars
        M(Msg::KeyValue),
        Varint,
        Fixed64, // min
        Fixed64, // max
    ];
    const EXPONENTIAL: &[Field] = &[
        Unknown,
        M(Msg::KeyValue),
        Fixed64,
        Fixed64,
        Fixed64, // count
        Fixed64, // sum
        Varint,  // scale (sint32)
        Fixed64, // zero_count
        M(Msg::Buckets),
        M(Msg::Buckets),
        Varint,  // flags
        Walked,  // exemplars
        Fixed64, // min
        Fixed64, // max
        Fixed64, // zero_threshold
    ];
    const SUMMARY: &[Field] = &[
        Unknown,
        Unknown,
        Fixed64,
        Fixed64,
        Fixed64, // count
        Fixed64, // sum
        M(Msg::ValueAtQuantile),
        M(Msg::KeyValue),
        Varint,
    ];
    let (fields, exemplars) = match data {
        Data::Gauge | Data::Sum => (NUMBER, 5),
        Data::Histogram => (HISTOGRAM, 8),
        Data::ExponentialHistogram => (EXPONENTIAL, 11),
        Data::Summary => (SUMMARY, 0),
    };
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match value {
            Value::Len(e) if tag == exemplars => exemplar(e, depth)?,
            _ => check(fields, tag, value, depth)?,
        }
    }
    Ok(())
}

/// An exemplar's trace and span ids are optional, but valid when present.
fn exemplar(body: &[u8], depth: u32) -> Walk {
    const FIELDS: &[Field] = &[
        Unknown,
        Unknown,
        Fixed64, // time_unix_nano
        Fixed64, // as_double
        Walked,  // span_id
        Walked,  // trace_id
        Fixed64, // as_int
        M(Msg::KeyValue),
    ];
    let depth = depth.checked_sub(1).ok_or(NeedsDecode)?;
    let (mut trace_id, mut span_id) = (None, None);
    let mut r = Reader::new(body);
    while let Some((tag, value)) = r.field()? {
        match tag {
            4 => once(&mut span_id, value)?,
            5 => once(&mut trace_id, value)?,
            _ => check(FIELDS, tag, value, depth)?,
        }
    }
    id(trace_id, 16, true)?;
    id(span_id, 8, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field key followed by a length-delimited body.
    fn len_field(tag: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(tag << 3 | 2) as u8];
        let mut len = body.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(body);
        out
    }

    fn span(trace_id: &[u8], span_id: &[u8]) -> Vec<u8> {
        [len_field(1, trace_id), len_field(2, span_id), len_field(5, b"GET /")].concat()
    }

    fn traces(spans: &[Vec<u8>]) -> Vec<u8> {
        let scope: Vec<u8> = spans.iter().flat_map(|s| len_field(2, s)).collect();
        len_field(1, &len_field(2, &scope))
    }

    #[test]
    fn counts_spans_and_finds_the_resource() {
        let req = traces(&[span(&[1; 16], &[2; 8]), span(&[3; 16], &[4; 8])]);
        let entries = scan(Request::Traces, &req).unwrap();
        assert_eq!(entries, vec![ResourceEntry { range: 2..req.len(), items: 2 }]);
    }

    #[test]
    fn hands_over_what_validation_would_change() {
        for bad in [span(&[0; 16], &[2; 8]), span(&[1; 15], &[2; 8]), span(&[1; 16], &[])] {
            assert_eq!(scan(Request::Traces, &traces(&[bad])), Err(NeedsDecode));
        }
        let empty_scope = len_field(1, &len_field(2, &[]));
        assert_eq!(scan(Request::Traces, &empty_scope), Err(NeedsDecode));
    }

    #[test]
    fn hands_over_malformed_bytes() {
        let mut req = traces(&[span(&[1; 16], &[2; 8])]);
        req.pop(); // truncated
        assert_eq!(scan(Request::Traces, &req), Err(NeedsDecode));
        let not_utf8 = traces(&[[span(&[1; 16], &[2; 8]), len_field(5, &[0xff])].concat()]);
        assert_eq!(scan(Request::Traces, &not_utf8), Err(NeedsDecode));
        assert_eq!(scan(Request::Traces, &[0x0b]), Err(NeedsDecode), "a group");
        assert_eq!(scan(Request::Traces, &[0x08, 0x80]), Err(NeedsDecode), "a cut varint");
        // Found by fuzz/wire_scan: a key past u32 (tag 1,269,520,045 would fit in a u32).
        let key_past_u32 = [0xea, 0xea, 0xea, 0xea, 0x25, 0x00];
        assert_eq!(scan(Request::Logs, &key_past_u32), Err(NeedsDecode));
    }

    #[test]
    fn skips_unknown_fields_and_accepts_an_empty_request() {
        assert_eq!(scan(Request::Logs, &[]), Ok(vec![]));
        let req = [vec![0x10, 0x05], traces(&[span(&[1; 16], &[2; 8])])].concat();
        assert_eq!(scan(Request::Traces, &req).unwrap()[0].items, 1);
    }

    #[test]
    fn deep_attribute_values_go_to_the_decoder() {
        // AnyValue { array_value { values: AnyValue { array_value ... } } }.
        let request = |depth: usize| {
            let mut value = len_field(1, b"x");
            for _ in 0..depth {
                value = len_field(5, &len_field(1, &value));
            }
            let mut s = span(&[1; 16], &[2; 8]);
            s.extend(len_field(9, &[len_field(1, b"k"), len_field(2, &value)].concat()));
            traces(&[s])
        };
        assert!(scan(Request::Traces, &request(10)).is_ok());
        assert_eq!(scan(Request::Traces, &request(40)), Err(NeedsDecode));
    }
}
