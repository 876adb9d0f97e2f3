//! Per-client token buckets (requests/s and items/s), shared by every
//! connection of the same identity.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::access::matches;
use crate::config::{RateLimit, RateLimitConfig};

/// Identities tracked at most; idle (full) buckets are evicted past it.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    rate: f64,
    capacity: f64,
}

impl Bucket {
    fn new(rate: f64, burst_seconds: f64) -> Self {
        let capacity = (rate * burst_seconds).max(1.0);
        Self { tokens: capacity, rate, capacity }
    }

    fn refill(&mut self, elapsed: Duration) {
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.capacity);
    }

    /// How long until `n` may be taken (zero: now). A request larger than the
    /// bucket may go once the bucket is full, leaving it in debt.
    fn wait(&self, n: f64) -> Duration {
        let need = n.min(self.capacity);
        if self.tokens >= need { Duration::ZERO } else { Duration::from_secs_f64((need - self.tokens) / self.rate) }
    }
}

#[derive(Debug)]
struct Client {
    requests: Option<Bucket>,
    items: Option<Bucket>,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    config: RateLimitConfig,
    clients: Mutex<HashMap<String, Client>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self { config, clients: Mutex::default() }
    }

    pub fn is_enabled(&self) -> bool {
        self.config.default.is_some() || !self.config.overrides.is_empty()
    }

    fn limit_for(&self, identity: &str) -> Option<&RateLimit> {
        self.config
            .overrides
            .iter()
            .find(|o| o.identities.iter().any(|p| matches(p, identity)))
            .map(|o| &o.limit)
            .or(self.config.default.as_ref())
    }

    /// Override patterns, for metric labels.
    pub fn patterns(&self) -> impl Iterator<Item = &String> {
        self.config.overrides.iter().flat_map(|o| &o.identities)
    }

    /// Takes one request and `items` items from `identity`'s buckets, or says
    /// how long to wait (nothing is taken then).
    pub fn check(&self, identity: &str, items: usize) -> Result<(), Duration> {
        let Some(limit) = self.limit_for(identity) else { return Ok(()) };
        let now = Instant::now();
        let mut clients = self.clients.lock().expect("rate limiter lock");
        if clients.len() >= MAX_TRACKED && !clients.contains_key(identity) {
            clients.retain(|_, c| {
                c.requests.is_some_and(|b| b.tokens < b.capacity) || c.items.is_some_and(|b| b.tokens < b.capacity)
            });
        }
        let client = clients.entry(identity.to_owned()).or_insert_with(|| Client {
            requests: limit.requests_per_second.map(|r| Bucket::new(r, limit.burst_seconds)),
            items: limit.items_per_second.map(|r| Bucket::new(r, limit.burst_seconds)),
            last: now,
        });
        let elapsed = now - client.last;
        client.last = now;
        for bucket in client.requests.iter_mut().chain(client.items.iter_mut()) {
            bucket.refill(elapsed);
        }
        let wait = client
            .requests
            .map_or(Duration::ZERO, |b| b.wait(1.0))
            .max(client.items.map_or(Duration::ZERO, |b| b.wait(items as f64)));
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = &mut client.requests {
            b.tokens -= 1.0;
        }
        if let Some(b) = &mut client.items {
            b.tokens -= items as f64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitOverride;

    fn limiter() -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            default: Some(RateLimit { requests_per_second: Some(10.0), items_per_second: None, burst_seconds: 1.0 }),
            overrides: vec![RateLimitOverride {
                identities: vec!["noisy*".into()],
                limit: RateLimit { requests_per_second: None, items_per_second: Some(100.0), burst_seconds: 2.0 },
            }],
        })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let l = limiter();
        for _ in 0..10 {
            l.check("a", 1).unwrap();
        }
        let wait = l.check("a", 1).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        tokio::time::advance(wait).await;
        l.check("a", 1).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn identities_do_not_share_buckets() {
        let l = limiter();
        l.check("noisy-1", 200).unwrap();
        assert!(l.check("noisy-1", 1).is_err(), "the override's item bucket is empty");
        l.check("quiet", 1).unwrap();
        l.check("noisy-2", 200).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_requests_pass_on_a_full_bucket() {
        let l = limiter();
        l.check("noisy", 1000).unwrap();
        let wait = l.check("noisy", 1).unwrap_err();
        assert!(wait >= Duration::from_secs(8), "in debt for 800 items at 100/s: {wait:?}");
    }
}
