//! The unacked entries (pure): batches to send, acks, and the merge that bounds them.
//!
//! **Merge rule.** Past the ledger's bound, the older half of the entries that were *never
//! sent* (seq above the `sent` mark, in any session of any process) merge per user and service
//! into one entry each: bytes summed, `from` the earliest, `to` the latest, and the *highest*
//! seq of those merged. An entry that was sent but not acked is never merged: the controller
//! may have stored it already, and an entry carrying its bytes again under another seq would
//! count them twice. Taking the highest seq keeps seqs unique and ascending, and keeps every
//! merged entry above the `sent` mark.

use std::collections::{BTreeMap, VecDeque};

use vpn_shared::proto::UsageEntry;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Ascending seq, all above the last ack.
    pub entries: VecDeque<UsageEntry>,
}

impl Backlog {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry up to `up_to`; returns how many went.
    pub fn ack(&mut self, up_to: u64) -> usize {
        let before = self.entries.len();
        while self.entries.front().is_some_and(|e| e.seq <= up_to) {
            self.entries.pop_front();
        }
        before - self.entries.len()
    }

    /// The oldest `max` entries (ascending seq): what goes in the next `Usage` frame.
    pub fn batch(&self, max: usize) -> Vec<UsageEntry> {
        self.entries.iter().take(max).cloned().collect()
    }

    /// The entries after the merge rule above, or `None` when nothing can merge.
    pub fn merged(&self, sent_up_to: u64) -> Option<Backlog> {
        let unsent: Vec<&UsageEntry> = self.entries.iter().filter(|e| e.seq > sent_up_to).collect();
        let old = &unsent[..unsent.len() / 2];
        let mut by_key: BTreeMap<(&str, &str), UsageEntry> = BTreeMap::new();
        for e in old {
            by_key
                .entry((e.user.as_str(), e.service.as_str()))
                .and_modify(|m| {
                    m.seq = m.seq.max(e.seq);
                    m.up = m.up.saturating_add(e.up);
                    m.down = m.down.saturating_add(e.down);
                    m.undirected = m.undirected.saturating_add(e.undirected);
                    m.from = m.from.min(e.from);
                    m.to = m.to.max(e.to);
                })
                .or_insert_with(|| (*e).clone());
        }
        if by_key.len() == old.len() {
            return None;
        }
        let cutoff = old.last().map_or(0, |e| e.seq);
        let mut entries: Vec<UsageEntry> = self
            .entries
            .iter()
            .filter(|e| e.seq <= sent_up_to || e.seq > cutoff)
            .cloned()
            .chain(by_key.into_values())
            .collect();
        entries.sort_by_key(|e| e.seq);
        Some(Backlog {
            entries: entries.into(),
        })
    }
}
