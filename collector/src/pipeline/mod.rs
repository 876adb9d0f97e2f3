//! Pipelines: receiver → processors → batch → exporter queues.
//!
//! Admission is all-or-nothing: a request is charged against the memory
//! budget and given a slot in EVERY pipeline of its signal before any of them
//! gets it, so a refusal never leaves a half-delivered request behind (the
//! client's retry would duplicate it).

pub mod batch;
pub mod processor;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use prost::DecodeError;

use crate::encoded::Telemetry;
use crate::receiver::Rejection;
use crate::signal::Signal;
pub use processor::Processor;

/// Why the pipeline could not take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("memory limit reached")]
    MemoryLimit,
    #[error("pipeline queue is full")]
    QueueFull,
    #[error("collector is shutting down")]
    ShuttingDown,
}

impl Refusal {
    pub fn metric_label(self) -> &'static str {
        match self {
            Refusal::MemoryLimit => "memory_limit",
            Refusal::QueueFull => "queue_full",
            Refusal::ShuttingDown => "shutting_down",
        }
    }
}

/// A byte budget for telemetry being read or held anywhere in the pipelines,
/// inside a limit on the whole process's memory.
///
/// Telemetry is charged exactly (its size, or an estimate for decoded
/// copies). The rest of the process (code, connections, HTTP/2 buffers of
/// streams not yet read, the allocator's cache) is not charged request by
/// request: it is observed, as resident memory minus what telemetry holds
/// ([`MemoryBudget::observe_resident`]), and telemetry gets the part of the
/// limit it leaves, never less than [`MIN_SHARE`] of the limit so that data
/// keeps moving while the rest shrinks.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: AtomicUsize,
    /// Resident memory not held by telemetry, when last observed.
    other: AtomicUsize,
    gauge: Gauge,
    released: Notify,
    /// Memory of requests waiting for room, not yet charged: decoded ones
    /// are already in memory, unread ones wait in their clients' HTTP/2
    /// flow-control windows.
    waiting: AtomicUsize,
}

/// Requests may wait for room only while what waits stays under this share
/// of the limit; past it they are refused at once, so waiting cannot
/// multiply memory under overload.
const WAITING_SHARE: usize = 4;

/// Telemetry always gets at least this share of the limit (1/8), however
/// much the rest of the process holds.
const MIN_SHARE: usize = 8;

/// This share of the limit (1/8) is kept free for what the process grows
/// by between two readings of its resident memory.
const MARGIN_SHARE: usize = 8;

impl MemoryBudget {
    pub fn new(limit: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            other: AtomicUsize::new(0),
            gauge,
            released: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Reserves `bytes`, waiting until `deadline` for others to release room
    /// (unless too much already waits).
    pub async fn acquire(self: &Arc<Self>, bytes: usize, deadline: Instant) -> Option<Ticket> {
        if let Some(ticket) = self.try_acquire(bytes) {
            return Some(ticket);
        }
        let limit = self.room();
        if bytes > limit {
            return None; // would not fit even in an empty budget
        }
        if self.waiting.fetch_add(bytes, Ordering::AcqRel) + bytes > limit / WAITING_SHARE {
            self.waiting.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        let ticket = loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(ticket) = self.try_acquire(bytes) {
                break Some(ticket);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                break None;
            }
        };
        self.waiting.fetch_sub(bytes, Ordering::AcqRel);
        ticket
    }

    /// Changes the limit (a config reload); what is held stays held.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Records the process's resident memory, `resident` bytes: telemetry
    /// then gets the limit less what the rest of the process holds. Returns
    /// the room telemetry now has.
    pub fn observe_resident(&self, resident: usize) -> usize {
        self.other.store(resident.saturating_sub(self.used()), Ordering::Relaxed);
        let room = self.room();
        if room > self.used() {
            self.released.notify_waiters(); // the rest shrank: waiters may fit now
        }
        room
    }

    /// What telemetry may hold: the limit less the rest of the process and
    /// a margin ([`MARGIN_SHARE`]) once the rest has been observed, but at
    /// least [`MIN_SHARE`] of the limit.
    pub fn room(&self) -> usize {
        let limit = self.limit.load(Ordering::Relaxed);
        let other = match self.other.load(Ordering::Relaxed) {
            0 => 0, // not observed: the whole limit
            other => other + limit / MARGIN_SHARE,
        };
        limit.saturating_sub(other).max(limit / MIN_SHARE)
    }

    /// Reserves `bytes`, or refuses if that would pass the room telemetry has.
    pub fn try_acquire(self: &Arc<Self>, bytes: usize) -> Option<Ticket> {
        let mut used = self.used.load(Ordering::Relaxed);
        let limit = self.room();
        loop {
            if bytes > 0 && used + bytes > limit {
                return None;
            }
            match self.used.compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.gauge.set((used + bytes) as i64);
                    return Some(Ticket { budget: self.clone(), bytes });
                }
                Err(now) => used = now,
            }
        }
    }

    fn release(&self, bytes: usize) {
        let before = self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.gauge.set((before - bytes) as i64);
        self.released.notify_waiters();
    }
}

/// The process's resident memory (`VmRSS`), where the system says it.
pub fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: usize = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// How often the resident memory is read (~20 µs each time): telemetry
/// arriving at 600 MB/s moves it by 6 MB in this time.
pub const RESIDENT_INTERVAL: Duration = Duration::from_millis(10);

/// Keeps `budget` informed of the process's resident memory until `stop`;
/// `gauge` shows it. Does nothing where resident memory cannot be read.
pub async fn watch_resident(budget: Arc<MemoryBudget>, gauge: Gauge, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(RESIDENT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(resident) = resident_bytes() else { return };
        gauge.set(resident as i64);
        budget.observe_resident(resident);
    }
}

/// Bytes held against the budget; released when dropped.
#[derive(Debug)]
pub struct Ticket {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Ticket {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes over the bytes of `other`.
    pub fn merge(&mut self, mut other: Ticket) {
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Moves up to `bytes` into a new ticket.
    pub fn split(&mut self, bytes: usize) -> Ticket {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Ticket { budget: self.budget.clone(), bytes }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

/// Data on its way through one pipeline, with its item count and the memory
/// it holds.
#[derive(Debug)]
pub struct Batch {
    pub data: Telemetry,
    pub items: usize,
    pub ticket: Ticket,
}

impl Batch {
    pub fn new(data: Telemetry, ticket: Ticket) -> Self {
        Self { items: data.items(), data, ticket }
    }

    /// Splits off the first `n` items, with a proportional share of the ticket.
    pub fn split_front(&mut self, n: usize) -> Batch {
        let data = self.data.split_front(n);
        let items = data.items();
        let share = self.ticket.bytes() * items / self.items.max(1);
        self.items -= items;
        Batch { ticket: self.ticket.split(share), data, items }
    }

    pub fn append(&mut self, other: Batch) {
        self.data.append(other.data);
        self.items += other.items;
        self.ticket.merge(other.ticket);
    }
}

/// The entry of one pipeline.
#[derive(Debug)]
pub struct PipelineInput {
    pub name: String,
    pub processors: Vec<Processor>,
    pub tx: mpsc::Sender<Batch>,
}

/// Every pipeline, by signal.
#[derive(Debug)]
pub struct Pipelines {
    inputs: [Vec<PipelineInput>; 3],
    budget: Arc<MemoryBudget>,
    /// How long a request may wait for room before it is refused.
    wait: Duration,
}

impl Pipelines {
    pub fn new(inputs: Vec<(Signal, PipelineInput)>, budget: Arc<MemoryBudget>, wait: Duration) -> Self {
        let mut by_signal: [Vec<PipelineInput>; 3] = Default::default();
        for (signal, input) in inputs {
            by_signal[signal.index()].push(input);
        }
        Self { inputs: by_signal, budget, wait }
    }

    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Charges `bytes` of a request about to be read, before any of it is
    /// in memory, waiting up to the admission wait for room. The ticket
    /// then goes to [`Pipelines::accept`], which charges only what the
    /// request's copies need beyond it.
    pub async fn reserve(&self, bytes: usize) -> Result<Ticket, Rejection> {
        let deadline = Instant::now() + self.wait;
        self.budget.acquire(bytes, deadline).await.ok_or(Rejection::Refused(Refusal::MemoryLimit))
    }

    /// Hands `data` to every pipeline of its signal, or to none.
    /// `wire_len` is its encoded size; `reading` what was reserved to read
    /// it (see [`Pipelines::reserve`]). Pipelines without processors get the
    /// encoded form, charged its size; pipelines with processors a decoded
    /// copy, charged the memory it is estimated to hold. When memory or a
    /// queue is full, the request waits up to the admission wait for room (a
    /// brief burst becomes latency, not an error), then is refused.
    pub async fn accept(&self, data: Telemetry, wire_len: usize, reading: Ticket) -> Result<(), Rejection> {
        let signal = data.signal();
        let inputs = &self.inputs[signal.index()];
        if inputs.is_empty() {
            return Ok(());
        }
        // One copy per pipeline, all made before any is handed over: the
        // encoded form is shared bytes; the decoded form is cloned for all but
        // the last pipeline that takes it.
        let processing = |i: &&PipelineInput| !i.processors.is_empty();
        let decoding = inputs.iter().filter(processing).count();
        let plain = inputs.len() - decoding;
        let malformed = |e: DecodeError| Rejection::Invalid(format!("malformed protobuf: {e}"));
        let (encoded, decoded) = match (plain, decoding) {
            (_, 0) => (Some(data.into_encoded()), None),
            (0, _) => (None, Some(data.into_decoded().map_err(malformed)?)),
            _ => (Some(data.to_encoded()), Some(data.into_decoded().map_err(malformed)?)),
        };
        let mut copies = Vec::with_capacity(inputs.len());
        if let Some(encoded) = encoded {
            let plain_inputs = inputs.iter().filter(|i| i.processors.is_empty());
            let shared = plain_inputs.zip(std::iter::repeat_n(encoded, plain));
            copies.extend(shared.map(|(input, e)| (input, Telemetry::Encoded(e))));
        }
        if let Some(payload) = decoded {
            for (input, mut copy) in inputs.iter().filter(processing).zip(std::iter::repeat_n(payload, decoding)) {
                for p in &input.processors {
                    p.apply(&mut copy);
                }
                copies.push((input, Telemetry::Decoded(copy)));
            }
        }
        let held = |data: &Telemetry| match data {
            Telemetry::Encoded(e) => e.encoded_len(),
            Telemetry::Decoded(_) => signal.in_memory_estimate(wire_len),
        };
        let deadline = Instant::now() + self.wait;
        // The read's reservation pays first; what it holds beyond the
        // copies is released when `ticket` drops.
        let total: usize = copies.iter().map(|(_, data)| held(data)).sum();
        let mut ticket = reading;
        if total > ticket.bytes() {
            let more = self.budget.acquire(total - ticket.bytes(), deadline).await;
            ticket.merge(more.ok_or(Refusal::MemoryLimit)?);
        }
        let mut permits = Vec::with_capacity(copies.len());
        for (input, _) in &copies {
            // `timeout_at` polls once before looking at the clock, so a zero
            // wait still takes free room.
            match tokio::time::timeout_at(deadline, input.tx.reserve()).await {
                Ok(Ok(permit)) => permits.push(permit),
                Ok(Err(_closed)) => return Err(Refusal::ShuttingDown.into()),
                Err(_elapsed) => return Err(Refusal::QueueFull.into()),
            }
        }
        for ((_, data), permit) in copies.into_iter().zip(permits) {
            let ticket = ticket.split(held(&data));
            if !data.is_empty() {
                permit.send(Batch::new(data, ticket));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Payload;
    use crate::signal::testdata::*;

    fn spans(n: usize) -> Telemetry {
        Telemetry::Decoded(traces(1, 1, n))
    }

    /// What one request of `spans(1)` is charged in a pipeline without processors.
    fn one() -> usize {
        spans(1).encoded_len()
    }

    /// A request that reserved nothing before it was read.
    fn nothing(p: &Pipelines) -> Ticket {
        p.budget().try_acquire(0).unwrap()
    }

    fn refused(r: Refusal) -> Result<(), Rejection> {
        Err(Rejection::Refused(r))
    }

    fn pipelines(n: usize, cap: usize, limit: usize) -> (Pipelines, Vec<mpsc::Receiver<Batch>>) {
        let mut inputs = Vec::new();
        let mut rxs = Vec::new();
        for i in 0..n {
            let (tx, rx) = mpsc::channel(cap);
            inputs.push((Signal::Traces, PipelineInput { name: format!("traces/{i}"), processors: vec![], tx }));
            rxs.push(rx);
        }
        (Pipelines::new(inputs, MemoryBudget::new(limit, Gauge::default()), Duration::ZERO), rxs)
    }

    #[tokio::test]
    async fn fan_out_is_all_or_nothing() {
        let (p, mut rxs) = pipelines(2, 1, 1 << 20);
        let t = spans(2);
        p.accept(t.clone(), 100, nothing(&p)).await.unwrap();
        // The first pipeline drains, the second stays full: nobody gets the next request.
        rxs[0].try_recv().unwrap();
        assert_eq!(p.accept(t.clone(), 100, nothing(&p)).await, refused(Refusal::QueueFull));
        assert!(rxs[0].try_recv().is_err(), "the pipeline with room got nothing");
        assert_eq!(p.budget().used(), t.encoded_len(), "only the queued copy holds memory");
    }

    #[tokio::test]
    async fn memory_limit_refuses_and_releases() {
        let (p, mut rxs) = pipelines(1, 10, one() * 5 / 2);
        p.accept(spans(1), 100, nothing(&p)).await.unwrap();
        p.accept(spans(1), 100, nothing(&p)).await.unwrap();
        assert_eq!(p.accept(spans(1), 100, nothing(&p)).await, refused(Refusal::MemoryLimit));
        drop(rxs[0].try_recv().unwrap());
        assert_eq!(p.budget().used(), one());
        p.accept(spans(1), 100, nothing(&p)).await.unwrap();
    }

    #[tokio::test]
    async fn a_read_reservation_pays_for_the_request_it_becomes() {
        let (p, mut rxs) = pipelines(1, 10, one() * 5 / 2);
        // Reserved for reading: room for one more request, not two.
        let reading = p.reserve(one() * 3 / 2).await.unwrap();
        assert_eq!(p.reserve(one() * 3 / 2).await.unwrap_err(), Rejection::Refused(Refusal::MemoryLimit));
        // The request needs less than was reserved: the rest is released.
        p.accept(spans(1), 100, reading).await.unwrap();
        assert_eq!(p.budget().used(), one());
        // A reservation smaller than the request is topped up.
        let reading = p.reserve(one() / 2).await.unwrap();
        p.accept(spans(1), 100, reading).await.unwrap();
        assert_eq!(p.budget().used(), 2 * one());
        // A refused request releases its reservation.
        let reading = p.reserve(one() / 4).await.unwrap();
        assert_eq!(p.accept(spans(1), 100, reading).await, refused(Refusal::MemoryLimit));
        assert_eq!(p.budget().used(), 2 * one());
        drop(rxs[0].try_recv().unwrap());
        assert_eq!(p.budget().used(), one());
    }

    #[tokio::test]
    async fn closed_pipeline_means_shutting_down() {
        let (p, mut rxs) = pipelines(1, 10, 1000);
        rxs[0].close();
        assert_eq!(p.accept(spans(1), 10, nothing(&p)).await, refused(Refusal::ShuttingDown));
        assert_eq!(p.budget().used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_for_room_until_its_deadline() {
        let (mut p, mut rxs) = pipelines(1, 10, 4 * one());
        p.wait = Duration::from_secs(1);
        for _ in 0..4 {
            p.accept(spans(1), 100, nothing(&p)).await.unwrap();
        }
        // Room appears after 300 ms: the fifth request waits, then goes in.
        let batch = rxs[0].try_recv().unwrap();
        let started = Instant::now();
        let (result, ()) = tokio::join!(p.accept(spans(1), 100, nothing(&p)), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(batch);
        });
        result.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        // No room within the wait: refused after it.
        let started = Instant::now();
        assert_eq!(p.accept(spans(1), 100, nothing(&p)).await, refused(Refusal::MemoryLimit));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // While a quarter of the limit already waits, the next is refused at once.
        let started = Instant::now();
        let (first, second) = tokio::join!(p.accept(spans(1), 100, nothing(&p)), p.accept(spans(1), 100, nothing(&p)));
        assert_eq!((first, second), (refused(Refusal::MemoryLimit), refused(Refusal::MemoryLimit)));
        assert_eq!(started.elapsed(), Duration::from_secs(1), "only one of them waited");
    }

    #[test]
    fn telemetry_gets_what_the_rest_of_the_process_leaves() {
        let budget = MemoryBudget::new(1600, Gauge::default());
        assert_eq!(budget.room(), 1600, "before any reading, the whole limit");
        let held = budget.try_acquire(300).unwrap();
        // 1000 resident, 300 of it telemetry: the rest is 700, and 200 (1/8) is kept as margin.
        assert_eq!(budget.observe_resident(1000), 700);
        assert!(budget.try_acquire(600).is_none(), "300 + 600 is past the room of 700");
        let more = budget.try_acquire(400).unwrap();
        // The rest grows to 1500: telemetry keeps its floor of 1/8.
        assert_eq!(budget.observe_resident(1500 + 700), 200);
        assert!(budget.try_acquire(1).is_none());
        drop((held, more));
        assert_eq!(budget.used(), 0);
        budget.set_limit(3200);
        assert_eq!(budget.room(), 3200 - 1500 - 400, "a reload keeps the last reading");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_request_gets_room_when_the_rest_of_the_process_shrinks() {
        let budget = MemoryBudget::new(1600, Gauge::default());
        let _held = budget.try_acquire(280).unwrap();
        budget.observe_resident(280 + 1120); // room: 1600 - 1120 - 200 = 280
        let deadline = Instant::now() + Duration::from_secs(1);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(50, deadline).await.map(|t| t.bytes()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "280 + 50 does not fit in 280");
        budget.observe_resident(280 + 900); // room: 500
        assert_eq!(waiting.await.unwrap(), Some(50));
    }

    #[test]
    fn batch_split_shares_the_ticket() {
        let budget = MemoryBudget::new(1000, Gauge::default());
        for data in [spans(10), Telemetry::Encoded(spans(10).to_encoded())] {
            let mut b = Batch::new(data, budget.try_acquire(1000).unwrap());
            let head = b.split_front(4);
            assert_eq!((head.items, head.data.items(), head.ticket.bytes()), (4, 4, 400));
            assert_eq!((b.items, b.data.items(), b.ticket.bytes()), (6, 6, 600));
            drop(head);
            assert_eq!(budget.used(), 600);
        }
    }

    #[tokio::test]
    async fn plain_pipelines_get_bytes_and_processing_ones_structs() {
        let (tx_plain, mut plain) = mpsc::channel(1);
        let (tx_edit, mut edit) = mpsc::channel(1);
        let rename = Processor::Resource(vec![crate::config::AttributeAction {
            key: "service.name".into(),
            action: crate::config::ActionKind::Upsert,
            value: Some(crate::config::AttributeValue::String("renamed".into())),
        }]);
        let inputs = vec![
            (Signal::Traces, PipelineInput { name: "plain".into(), processors: vec![], tx: tx_plain }),
            (Signal::Traces, PipelineInput { name: "edit".into(), processors: vec![rename], tx: tx_edit }),
        ];
        let p = Pipelines::new(inputs, MemoryBudget::new(1 << 20, Gauge::default()), Duration::ZERO);
        let original = traces(1, 1, 3);
        let request = Telemetry::from_request(Signal::Traces, &original.encode_request()).unwrap();
        p.accept(request, original.encoded_len(), nothing(&p)).await.unwrap();
        let (plain, edit) = (plain.try_recv().unwrap(), edit.try_recv().unwrap());
        assert!(matches!(plain.data, Telemetry::Encoded(_)));
        assert_eq!(plain.data.decoded().unwrap().into_owned(), original, "forwarded untouched");
        let Telemetry::Decoded(Payload::Traces(edited)) = &edit.data else { panic!("decoded for the processor") };
        assert_eq!(edited[0].resource.as_ref().unwrap().attributes, vec![kv("service.name", "renamed")]);
        assert_eq!((plain.items, edit.items), (3, 3));
        assert_eq!(
            p.budget().used(),
            original.encoded_len() + Signal::Traces.in_memory_estimate(original.encoded_len()),
            "bytes are charged their size, structs their estimate"
        );
    }
}
