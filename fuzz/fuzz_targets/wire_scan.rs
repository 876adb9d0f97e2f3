//! The collector's fast path against its full decoder: whatever the wire walk
//! (`Encoded::scan`) accepts, prost decodes, validation leaves untouched, and
//! both count the same items (`tests/wire_property`, shared with
//! `tests/wire.rs`).
//!
//! Input: `[selector, _, body...]`, the layout of `decode_validate`, so the
//! two corpora feed each other: `selector & 3` is the signal (0 traces,
//! 1 metrics, 2 logs, 3 traces); the second byte is unused.
#![no_main]

#[path = "../../tests/wire_property/mod.rs"]
mod wire_property;

use libfuzzer_sys::fuzz_target;
use otlp_collector::signal::Signal;

fuzz_target!(|data: &[u8]| {
    let [selector, _, body @ ..] = data else { return };
    let signal = match selector & 3 {
        1 => Signal::Metrics,
        2 => Signal::Logs,
        _ => Signal::Traces,
    };
    wire_property::check(signal, body);
});
