//! The collector's wire walk (`otlp_fleet::wire::scan`) alone, on the
//! benchmark payloads: time per request and per item, and bytes per second.
//!
//!     cargo run --release -p otlp-bench --bin wire-speed

use std::time::Instant;

use otlp_bench::Profile;
use otlp_fleet::wire::{Request, scan};

fn main() {
    let profiles = [
        (Profile::Metrics10, Request::Metrics),
        (Profile::Metrics1000, Request::Metrics),
        (Profile::Spans100, Request::Traces),
        (Profile::Logs100, Request::Logs),
    ];
    for (profile, kind) in profiles {
        let (request, items) = profile.request();
        let body = request.encode_to_vec();
        // About 200 MB of requests per profile.
        let rounds = 200_000_000 / body.len() + 1;
        let started = Instant::now();
        for _ in 0..rounds {
            let resources = scan(kind, std::hint::black_box(&body)).expect("the bench payloads are valid");
            std::hint::black_box(resources);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{profile:?}: {:.1} µs a request, {:.3} µs an item, {:.2} GB/s",
            secs * 1e6 / rounds as f64,
            secs * 1e6 / (rounds * items) as f64,
            (rounds * body.len()) as f64 / secs / 1e9
        );
    }
}
