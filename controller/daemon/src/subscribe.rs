//! The fleet subscription behind `vpn tui` (SPEC §2.7; wire types in
//! `vpn_shared::proto::stream`): a snapshot in parts, then coalesced changes, events and rates.
//!
//! Each subscriber is one task that owns its stream and a [`Mirror`] of what it sent (a hash
//! per item, not the items). Once a second it reads the fleet's hosts and services (a few
//! queries, whatever the fleet does) and sends only what differs from the mirror, reads the
//! events recorded since the last one it sent, and sends every host's rates. Users change by
//! name: admin mutations and quota status changes are announced on [`Watch`], and the
//! subscriber re-reads those users on its next tick; usage moves every user's counters, so after
//! usage arrived it compares every user with its mirror at most once per [`USAGE_EVERY`].
//!
//! Nothing the controller does waits on a subscriber: announcements go through a bounded
//! broadcast channel that never blocks the sender. A subscriber that falls behind the channel,
//! or whose client stops reading for [`WRITE_TIMEOUT`], gets [`StreamMsg::Lagged`] (if it can
//! still take it) and its stream ends; the client subscribes again and gets a fresh snapshot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use quinn::SendStream;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tracing::{debug, info};
use vpn_shared::proto::admin::{AdminResponse, ServerDetail, UserDetail};
use vpn_shared::proto::frame::write_frame;
use vpn_shared::proto::stream::{HostRateInfo, SnapshotPart, StreamEvent, StreamMsg};

use crate::admin::AdminError;
use crate::server::Controller;
use crate::views;

/// How often changes, events and rates go out.
const TICK: Duration = Duration::from_secs(1);
/// At most this often every user is compared with the mirror after usage arrived.
const USAGE_EVERY: Duration = Duration::from_secs(10);
/// Rates are the traffic reported over this window (agents report every 10 s by default).
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Users per snapshot part (a part stays far below a frame).
const USERS_PER_PART: usize = 2_000;
/// Events in the snapshot, and at most per tick.
const EVENTS: u32 = 200;
/// A client that reads nothing for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Announcements a subscriber may be behind before it is dropped.
const CHANNEL: usize = 4_096;

/// What changed, as the controller announces it to subscribers.
#[derive(Debug, Clone)]
pub enum Touched {
    /// These users were added, changed or removed (by name).
    Users(Vec<String>),
    /// A usage batch of a host was written: its bytes, both ways.
    Usage { host_id: String, rx: u64, tx: u64 },
}

/// The announcement channel (held by the controller).
pub struct Watch {
    tx: broadcast::Sender<Arc<Touched>>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            tx: broadcast::channel(CHANNEL).0,
        }
    }
}

impl Watch {
    /// Announces a change; never waits (nobody listening is fine).
    pub fn publish(&self, touched: Touched) {
        let _ = self.tx.send(Arc::new(touched));
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Touched>> {
        self.tx.subscribe()
    }
}

/// Why a stream ended.
#[derive(Debug)]
enum End {
    /// The client went away or stopped reading.
    Gone(String),
    /// The subscriber fell behind the announcements.
    Lagged,
    Store(String),
}

impl From<AdminError> for End {
    fn from(e: AdminError) -> Self {
        End::Store(e.message().to_owned())
    }
}

/// Serves one subscription until the client goes away or falls behind.
pub async fn serve(ctl: Arc<Controller>, mut send: SendStream, admin: String) {
    let mut rx = ctl.watch.subscribe();
    let mut sub = Subscriber {
        ctl: &ctl,
        send: &mut send,
        mirror: Mirror::default(),
        rates: Rates::default(),
        last_event: 0,
    };
    info!(%admin, "subscription opened");
    let end = sub.run(&mut rx).await;
    match &end {
        End::Lagged => {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                write_frame(sub.send, &AdminResponse::Stream(StreamMsg::Lagged)),
            )
            .await;
            info!(%admin, "subscription dropped: the subscriber fell behind");
        }
        End::Gone(why) => debug!(%admin, reason = %why, "subscription ended"),
        End::Store(why) => info!(%admin, error = %why, "subscription ended: the store failed"),
    }
    let _ = send.reset(0u32.into());
}

struct Subscriber<'a> {
    ctl: &'a Controller,
    send: &'a mut SendStream,
    mirror: Mirror,
    rates: Rates,
    /// The number of the last event sent.
    last_event: i64,
}

impl Subscriber<'_> {
    async fn run(&mut self, rx: &mut broadcast::Receiver<Arc<Touched>>) -> End {
        if let Err(end) = self.snapshot().await {
            return end;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut users: HashSet<String> = HashSet::new();
        let mut usage_since: Option<Instant> = None;
        let mut users_compared = Instant::now();
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(t) => match t.as_ref() {
                        Touched::Users(names) => users.extend(names.iter().cloned()),
                        Touched::Usage { host_id, rx, tx } => {
                            self.rates.add(Instant::now(), host_id, *rx, *tx);
                            usage_since.get_or_insert_with(Instant::now);
                        }
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => return End::Lagged,
                    Err(broadcast::error::RecvError::Closed) => return End::Gone("controller stopping".into()),
                },
                _ = tick.tick() => {
                    let all_users = usage_since.is_some() && users_compared.elapsed() >= USAGE_EVERY;
                    let result = self.flush(std::mem::take(&mut users), all_users).await;
                    if all_users {
                        usage_since = None;
                        users_compared = Instant::now();
                    }
                    if let Err(end) = result {
                        return end;
                    }
                }
            }
        }
    }

    async fn write(&mut self, msg: StreamMsg) -> Result<(), End> {
        let frame = AdminResponse::Stream(msg);
        match tokio::time::timeout(WRITE_TIMEOUT, write_frame(self.send, &frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Gone(e.to_string())),
            Err(_) => Err(End::Lagged),
        }
    }

    async fn snapshot(&mut self) -> Result<(), End> {
        let hosts = views::server_details(self.ctl, None).await?;
        let services = views::services(self.ctl).await.map_err(AdminError::from)?;
        let users = views::user_details(self.ctl, None).await?;
        let events = self.events().await?;
        self.mirror.hosts.reset(&hosts, |h| h.server.name.clone());
        self.mirror.services.reset(&services, |s| s.name.clone());
        self.mirror.users.reset(&users, |u| u.user.name.clone());
        self.rates.names = names_of(&hosts);
        let mut parts: Vec<Vec<UserDetail>> = users
            .chunks(USERS_PER_PART)
            .map(<[UserDetail]>::to_vec)
            .collect();
        if parts.is_empty() {
            parts.push(Vec::new());
        }
        let count = parts.len();
        let mut first = Some((hosts, services, events));
        for (i, users) in parts.into_iter().enumerate() {
            let (hosts, services, events) = first.take().unwrap_or_default();
            let part = SnapshotPart {
                hosts,
                services,
                users,
                events,
                last: i + 1 == count,
            };
            self.write(StreamMsg::Snapshot(part)).await?;
        }
        Ok(())
    }

    /// Events recorded since the last one sent (the newest [`EVENTS`] at first).
    async fn events(&mut self) -> Result<Vec<StreamEvent>, End> {
        let rows = self
            .ctl
            .store
            .fleet_events(self.last_event, EVENTS)
            .await
            .map_err(|e| End::Store(e.to_string()))?;
        if let Some((id, _, _)) = rows.last() {
            self.last_event = *id;
        }
        Ok(rows
            .into_iter()
            .map(|(_, host, event)| StreamEvent { host, event })
            .collect())
    }

    /// Sends what changed since the last tick: hosts, services, the named users (every user
    /// when `all_users`), new events, and the rates.
    async fn flush(&mut self, users: HashSet<String>, all_users: bool) -> Result<(), End> {
        let hosts = views::server_details(self.ctl, None).await?;
        self.rates.names = names_of(&hosts);
        let mut out = Vec::new();
        let (changed, removed) = self.mirror.hosts.diff(hosts, |h| h.server.name.clone());
        out.extend(changed.into_iter().map(StreamMsg::HostChanged));
        out.extend(removed.into_iter().map(StreamMsg::HostRemoved));
        let services = views::services(self.ctl).await.map_err(AdminError::from)?;
        let (changed, removed) = self.mirror.services.diff(services, |s| s.name.clone());
        out.extend(changed.into_iter().map(StreamMsg::ServiceChanged));
        out.extend(removed.into_iter().map(StreamMsg::ServiceRemoved));
        if all_users {
            let all = views::user_details(self.ctl, None).await?;
            let (changed, removed) = self.mirror.users.diff(all, |u| u.user.name.clone());
            out.extend(changed.into_iter().map(StreamMsg::UserChanged));
            out.extend(removed.into_iter().map(StreamMsg::UserRemoved));
        } else {
            for name in users {
                match views::user_details(self.ctl, Some(&name)).await {
                    Ok(mut found) => {
                        if let Some(u) = found.pop()
                            && self.mirror.users.changed(&name, &u)
                        {
                            out.push(StreamMsg::UserChanged(u));
                        }
                    }
                    // Not found: removed (a failing store is noticed by the next read).
                    Err(_) => {
                        if self.mirror.users.remove(&name) {
                            out.push(StreamMsg::UserRemoved(name));
                        }
                    }
                }
            }
        }
        for event in self.events().await? {
            out.push(StreamMsg::Event(event));
        }
        out.push(StreamMsg::Rates(self.rates.at(Instant::now())));
        for msg in out {
            self.write(msg).await?;
        }
        Ok(())
    }
}

/// The hosts rates are sent for: the online ones. Of an offline or never enrolled host the
/// controller knows no rate (an offline host may well be serving), so it names none.
fn names_of(hosts: &[ServerDetail]) -> HashMap<String, String> {
    hosts
        .iter()
        .filter(|h| h.server.online)
        .map(|h| (h.server.host_id.clone(), h.server.name.clone()))
        .collect()
}

/// What a subscriber last sent: one hash per item of each kind.
#[derive(Default)]
struct Mirror {
    hosts: Hashes,
    services: Hashes,
    users: Hashes,
}

/// Item key → hash of the item as last sent.
#[derive(Default)]
struct Hashes(HashMap<String, u64>);

fn hash_of<T: Serialize>(item: &T) -> u64 {
    let bytes = postcard::to_stdvec(item).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

impl Hashes {
    fn reset<T: Serialize>(&mut self, items: &[T], key: impl Fn(&T) -> String) {
        self.0 = items.iter().map(|i| (key(i), hash_of(i))).collect();
    }

    /// Records `item` under `name`; true when it differs from what was sent.
    fn changed<T: Serialize>(&mut self, name: &str, item: &T) -> bool {
        let h = hash_of(item);
        self.0.insert(name.to_owned(), h) != Some(h)
    }

    /// Forgets `name`; true if it was known.
    fn remove(&mut self, name: &str) -> bool {
        self.0.remove(name).is_some()
    }

    /// The items of `now` that changed or are new, and the names no longer there; the mirror
    /// becomes `now`.
    fn diff<T: Serialize>(
        &mut self,
        now: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> (Vec<T>, Vec<String>) {
        let mut seen = HashSet::with_capacity(now.len());
        let mut changed = Vec::new();
        for item in now {
            let name = key(&item);
            if self.changed(&name, &item) {
                changed.push(item);
            }
            seen.insert(name);
        }
        let removed: Vec<String> = self
            .0
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in &removed {
            self.0.remove(k);
        }
        (changed, removed)
    }
}

/// Traffic reported per host over the last [`RATE_WINDOW`].
#[derive(Default)]
struct Rates {
    /// (when it was written, host id, bytes to the host, bytes from it).
    window: VecDeque<(Instant, String, u64, u64)>,
    /// Host id → name, as of the last read of the hosts.
    names: HashMap<String, String>,
}

impl Rates {
    fn add(&mut self, at: Instant, host_id: &str, rx: u64, tx: u64) {
        self.window.push_back((at, host_id.to_owned(), rx, tx));
    }

    /// Every online host's rates at `now` (zero for one that reported no traffic).
    fn at(&mut self, now: Instant) -> Vec<HostRateInfo> {
        while let Some((at, ..)) = self.window.front() {
            if now.duration_since(*at) <= RATE_WINDOW {
                break;
            }
            self.window.pop_front();
        }
        let mut bytes: HashMap<&str, (u64, u64)> = HashMap::new();
        for (_, host, rx, tx) in &self.window {
            let e = bytes.entry(host.as_str()).or_default();
            e.0 = e.0.saturating_add(*rx);
            e.1 = e.1.saturating_add(*tx);
        }
        let secs = RATE_WINDOW.as_secs().max(1);
        let mut out: Vec<HostRateInfo> = self
            .names
            .iter()
            .map(|(id, name)| {
                let (rx, tx) = bytes.get(id.as_str()).copied().unwrap_or_default();
                HostRateInfo {
                    host: name.clone(),
                    rx_bps: rx.saturating_mul(8) / secs,
                    tx_bps: tx.saturating_mul(8) / secs,
                    cpu_permille: None,
                    mem_permille: None,
                }
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_sends_what_changed_or_came_and_names_what_went() {
        let mut h = Hashes::default();
        h.reset(&[("a", 1), ("b", 1), ("c", 1)], |x| x.0.to_owned());
        let (changed, removed) = h.diff(vec![("a", 1), ("b", 2), ("d", 1)], |x| x.0.to_owned());
        assert_eq!(changed, [("b", 2), ("d", 1)]);
        assert_eq!(removed, ["c"]);
        // Nothing changed since: nothing to send.
        let (changed, removed) = h.diff(vec![("a", 1), ("b", 2), ("d", 1)], |x| x.0.to_owned());
        assert!(changed.is_empty() && removed.is_empty());
        assert!(!h.changed("a", &("a", 1)));
        assert!(h.changed("a", &("a", 3)));
        assert!(h.remove("a") && !h.remove("a"));
    }

    #[test]
    fn rates_average_the_window_and_name_every_host() {
        let mut r = Rates {
            names: [("id1", "edge-1"), ("id2", "edge-2")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            ..Rates::default()
        };
        let t0 = Instant::now();
        r.add(t0, "id1", 10_000, 20_000);
        r.add(t0 + Duration::from_secs(5), "id1", 10_000, 0);
        let at = r.at(t0 + Duration::from_secs(6));
        assert_eq!(at[0].host, "edge-1");
        assert_eq!((at[0].rx_bps, at[0].tx_bps), (16_000, 16_000));
        assert_eq!((at[1].rx_bps, at[1].tx_bps), (0, 0));
        assert_eq!(at[1].cpu_permille, None, "not reported: never guessed");
        // The first batch leaves the window.
        let at = r.at(t0 + Duration::from_secs(12));
        assert_eq!((at[0].rx_bps, at[0].tx_bps), (8_000, 0));
    }
}
