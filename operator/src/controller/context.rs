//! What every reconcile shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::leader::LeaseConfig;
use crate::metrics::Metrics;

/// How one operator instance runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Watch only this namespace; `None`: every namespace.
    pub namespace: Option<String>,
    /// The leader Lease and this instance's identity (also the Events' reporting instance).
    pub lease: LeaseConfig,
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, identity: &str, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter { controller: crate::FIELD_MANAGER.into(), instance: Some(identity.into()) };
        Self { recorder: Recorder::new(client.clone(), reporter), client, metrics, failures: Mutex::default() }
    }

    /// The next retry delay for `key`: 1 s doubling to 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n - 1).min(9)).min(Duration::from_secs(300))
    }

    pub fn reset_backoff(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}
