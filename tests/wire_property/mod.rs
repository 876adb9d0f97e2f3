//! The contract of the collector's fast path, checked on any bytes: whatever
//! the wire walk (`Encoded::scan`) accepts, the full decoder decodes,
//! validation leaves untouched, and both count the same items. Used by
//! `tests/wire.rs` and by the `wire_scan` fuzz target.

use bytes::Bytes;
use otlp_collector::encoded::Encoded;
use otlp_collector::signal::{Signal, decode_request};
use otlp_collector::validate::validate;

/// Checks the contract for `body` as an Export request of `signal`; returns
/// whether the fast path took it.
pub fn check(signal: Signal, body: &[u8]) -> bool {
    let request = Bytes::copy_from_slice(body);
    let Some(encoded) = Encoded::scan(signal, &request) else { return false };
    let mut payload = match decode_request(signal, body) {
        Ok(p) => p,
        Err(e) => panic!("the wire walk accepted {signal} bytes the decoder refuses ({e}): {body:02x?}"),
    };
    // Compared as bytes: NaN != NaN in the structs.
    let before = payload.encode_request();
    let rejected = validate(&mut payload);
    assert_eq!(rejected.count, 0, "the wire walk accepted invalid {signal}: {}: {body:02x?}", rejected.message());
    assert_eq!(payload.encode_request(), before, "validation changed accepted {signal}: {body:02x?}");
    assert_eq!(encoded.items(), payload.items(), "item counts differ for {signal}: {body:02x?}");
    let resources = encoded.decode().expect("accepted resources decode one by one");
    assert_eq!(resources.encode_request(), before, "the resource slices are not the request: {body:02x?}");
    true
}
