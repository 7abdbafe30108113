//! The fleet as the UI knows it: hosts, services, users and recent events, kept up to date by
//! [`Update`]s. Rows live in vectors with a name index so an update is O(1) and the screens'
//! views (filtered, sorted index lists) are rebuilt only when a revision counter moved.

use std::collections::{HashMap, VecDeque};

use vpn_shared::proto::admin::{ServerDetail, ServiceInfo, UserDetail};

use crate::update::{FleetEvent, FleetSnapshot, HostRate};

/// How many rate samples a host keeps for its sparkline.
pub const HISTORY: usize = 60;
/// How many events the events screen keeps.
pub const MAX_EVENTS: usize = 10_000;

/// A host row: its detail plus the live figures the stream adds.
#[derive(Debug, Clone)]
pub struct HostRow {
    pub detail: ServerDetail,
    /// The last rates; `None` until the first [`HostRate`] for this host.
    pub rate: Option<HostRate>,
    /// rx + tx samples, oldest first, for the sparkline.
    pub history: VecDeque<u64>,
}

impl HostRow {
    fn new(detail: ServerDetail) -> HostRow {
        HostRow {
            detail,
            rate: None,
            history: VecDeque::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.detail.server.name
    }
}

/// A change to one row, so views can patch themselves instead of re-sorting everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowChange {
    /// The row at this index was added or changed.
    Upsert(u32),
    /// The row at `at` was removed; `moved`: the old index of the (last) row now at `at`.
    Remove { at: u32, moved: Option<u32> },
}

/// How many row changes the log keeps; views further behind rebuild.
const LOG: usize = 1_024;

/// Rows by name, with a revision that moves on every change and a log of recent changes.
#[derive(Debug, Clone)]
pub struct Rows<T> {
    pub items: Vec<T>,
    index: HashMap<String, usize>,
    /// Bumped on every change; views compare it with the one they were built from.
    pub rev: u64,
    /// The changes of revisions `log_from + 1 ..= rev`, one per revision.
    log: Vec<RowChange>,
    log_from: u64,
    name: fn(&T) -> &str,
}

impl<T> Rows<T> {
    pub fn new(name: fn(&T) -> &str) -> Rows<T> {
        Rows {
            items: Vec::new(),
            index: HashMap::new(),
            rev: 1,
            log: Vec::new(),
            log_from: 1,
            name,
        }
    }

    /// The changes since revision `rev`, or `None` when the log does not reach back so far
    /// (or a change was not logged): then a view must rebuild.
    pub fn changes_since(&self, rev: u64) -> Option<&[RowChange]> {
        let skip = usize::try_from(rev.checked_sub(self.log_from)?).ok()?;
        self.log.get(skip..)
    }

    /// Many rows changed at once (rates): views rebuild.
    pub fn touch_all(&mut self) {
        self.rev += 1;
        self.log.clear();
        self.log_from = self.rev;
    }

    fn logged(&mut self, change: RowChange) {
        if self.log.len() >= LOG {
            self.log.clear();
            self.log_from = self.rev;
        }
        self.rev += 1;
        self.log.push(change);
    }

    pub fn replace(&mut self, items: Vec<T>) {
        self.index = items
            .iter()
            .enumerate()
            .map(|(i, t)| ((self.name)(t).to_owned(), i))
            .collect();
        self.items = items;
        self.touch_all();
    }

    pub fn get(&self, name: &str) -> Option<&T> {
        self.index.get(name).map(|&i| &self.items[i])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        let i = *self.index.get(name)?;
        self.logged(RowChange::Upsert(u32::try_from(i).ok()?));
        self.items.get_mut(i)
    }

    /// Inserts or replaces by name; `merge` sees the old row (to carry live figures over).
    pub fn upsert(&mut self, item: T, merge: impl FnOnce(&T, &mut T)) {
        let mut item = item;
        let name = (self.name)(&item).to_owned();
        let i = match self.index.get(&name) {
            Some(&i) => {
                merge(&self.items[i], &mut item);
                self.items[i] = item;
                i
            }
            None => {
                self.index.insert(name, self.items.len());
                self.items.push(item);
                self.items.len() - 1
            }
        };
        match u32::try_from(i) {
            Ok(i) => self.logged(RowChange::Upsert(i)),
            Err(_) => self.touch_all(),
        }
    }

    pub fn remove(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let last = self.items.len() - 1;
        self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            self.index.insert((self.name)(moved).to_owned(), i);
        }
        match (u32::try_from(i), u32::try_from(last)) {
            (Ok(at), Ok(last)) => self.logged(RowChange::Remove {
                at,
                moved: (at != last).then_some(last),
            }),
            _ => self.touch_all(),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Everything the screens draw from.
#[derive(Debug, Clone)]
pub struct Model {
    pub hosts: Rows<HostRow>,
    pub services: Rows<ServiceInfo>,
    pub users: Rows<UserDetail>,
    /// Oldest first, at most [`MAX_EVENTS`].
    pub events: VecDeque<FleetEvent>,
    /// Moves when an event is added (or the snapshot replaced them).
    pub events_rev: u64,
    /// Whether a snapshot has arrived since start.
    pub loaded: bool,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            hosts: Rows::new(HostRow::name),
            services: Rows::new(|s: &ServiceInfo| &s.name),
            users: Rows::new(|u: &UserDetail| &u.user.name),
            events: VecDeque::new(),
            events_rev: 1,
            loaded: false,
        }
    }
}

impl Model {
    pub fn snapshot(&mut self, snap: FleetSnapshot) {
        // Sparklines survive a reconnect: keep the history of hosts that are still there.
        let mut old: HashMap<String, HostRow> = std::mem::take(&mut self.hosts.items)
            .into_iter()
            .map(|h| (h.name().to_owned(), h))
            .collect();
        let hosts = snap
            .hosts
            .into_iter()
            .map(|d| {
                let mut row = HostRow::new(d);
                if let Some(prev) = old.remove(row.name()) {
                    row.rate = prev.rate;
                    row.history = prev.history;
                }
                row
            })
            .collect();
        self.hosts.replace(hosts);
        self.services.replace(snap.services);
        self.users.replace(snap.users);
        self.events = snap.events.into();
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
        self.events_rev += 1;
        self.loaded = true;
    }

    pub fn host_changed(&mut self, detail: ServerDetail) {
        self.hosts.upsert(HostRow::new(detail), |old, new| {
            new.rate.clone_from(&old.rate);
            new.history.clone_from(&old.history);
        });
    }

    pub fn event(&mut self, ev: FleetEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(ev);
        self.events_rev += 1;
    }

    pub fn rates(&mut self, rates: Vec<HostRate>) {
        // A host the update does not name has no rate the controller knows (offline, never
        // enrolled): it shows "—", not its last figures.
        let named: std::collections::HashSet<&str> =
            rates.iter().map(|r| r.host.as_str()).collect();
        let mut changed = false;
        for row in self.hosts.items.iter_mut() {
            if row.rate.is_some() && !named.contains(row.detail.server.name.as_str()) {
                row.rate = None;
                changed = true;
            }
        }
        for rate in rates {
            let Some(&i) = self.hosts.index.get(&rate.host) else {
                continue;
            };
            let row = &mut self.hosts.items[i];
            if row.history.len() >= HISTORY {
                row.history.pop_front();
            }
            row.history
                .push_back(rate.rx_bps.saturating_add(rate.tx_bps));
            row.rate = Some(rate);
            changed = true;
        }
        if changed {
            self.hosts.touch_all();
        }
    }
}
