//! Counters of notable events: the one place where refusals and other notable events are both
//! logged (by the caller) and counted. The Prometheus endpoint that exposes them comes with the
//! metrics issue.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    events: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one refused connection or request by reason.
    pub fn refused(&self, reason: &'static str) {
        let mut m = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason).or_default() += 1;
    }

    /// Counts one notable event that is not a refusal (`health_changed`, say).
    pub fn event(&self, name: &'static str) {
        let mut m = self.events.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(name).or_default() += 1;
    }

    pub fn events(&self) -> BTreeMap<&'static str, u64> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
