//! Counters of notable events: the one place where refusals are both logged (by the caller)
//! and counted. The Prometheus endpoint that exposes them comes with the metrics issue.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    refusals: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one refused connection or request by reason.
    pub fn refused(&self, reason: &'static str) {
        let mut m = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason).or_default() += 1;
    }

    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
