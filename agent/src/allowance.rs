//! Offline enforcement of quotas (SPEC §2.6), decided without IO.
//!
//! The controller counts every host's traffic and tells this host, in
//! [`Allowances`] messages, what each user may still use and until when. Its figures include
//! this host's ledger entries of one epoch up to one seq ([`Allowances::up_to`]) and nothing
//! of this host after that; the agent subtracts what it measured after that point itself and
//! cuts a user off on this host when the bytes are used up or the expiry has passed — whether
//! or not the controller is reachable.
//!
//! - [`AllowanceBook`]: the last figures and which ledger entries they already count. The
//!   ledger drops acked entries, so an ack folds the ones the figures did not count into them
//!   first ([`AllowanceBook::on_ack`]). Persisted by the session after every change.
//! - [`Enforcer`]: the book, who is cut off now, the cut-offs not reported yet; what the
//!   session asks after every usage tick, message and new desired state.
//! - [`effective`]: the desired state minus the users cut off: what the host runs.
//!
//! **Invariant.** The book's figures count exactly the ledger entries with
//! `epoch == book.epoch && seq <= book.base` (and every entry the ledger already dropped);
//! every other entry of the ledger was spent since and is subtracted when deciding.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use vpn_shared::model::{DesiredState, Digest, TrackedState};
use vpn_shared::proto::{Allowances, CutOff, CutOffCause, UsageEntry};

/// The resource under which a failure to save the allowances is reported: a restart would
/// then enforce older figures.
pub const ALLOWANCES_RESOURCE: &str = "host/allowances";

/// One user's figures: what the controller last allowed, less what was folded in since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Figures {
    /// Bytes left over all hosts; `None`: no data limit.
    pub remaining: Option<u64>,
    /// Unix seconds; `None`: no expiry.
    pub expires_at: Option<i64>,
}

/// The controller's last figures per user id, and the point of this host's ledger they
/// count up to (see the module's invariant).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllowanceBook {
    /// The ledger epoch of `base`.
    pub epoch: u64,
    /// The highest seq of `epoch` the figures count.
    pub base: u64,
    /// By user id (`UserSpec::id`); a user not here is not limited.
    pub users: BTreeMap<String, Figures>,
}

impl AllowanceBook {
    /// Whether the figures already count `entry` of a ledger of `epoch`.
    fn counts(&self, epoch: u64, entry: &UsageEntry) -> bool {
        epoch == self.epoch && entry.seq <= self.base
    }

    /// Subtracts `bytes` from a limited user's remaining (saturating: an overdraft blocks).
    fn fold(&mut self, user: &str, bytes: u64) -> bool {
        match self.users.get_mut(user).and_then(|f| f.remaining.as_mut()) {
            Some(r) if bytes > 0 => {
                *r = r.saturating_sub(bytes);
                true
            }
            _ => false,
        }
    }

    /// The ledger of `ack_epoch` is about to drop `dropped` (its entries up to `up_to`): the
    /// ones the figures do not count yet are folded into them, since they will no longer be
    /// there to subtract. Call it only for an ack the ledger takes (its own epoch).
    ///
    /// Returns whether a figure changed. The base moves too, but that alone changes no
    /// decision (no entry up to `up_to` is left to count or not), so only a changed figure
    /// needs saving.
    pub fn on_ack<'a>(
        &mut self,
        ack_epoch: u64,
        up_to: u64,
        dropped: impl IntoIterator<Item = &'a UsageEntry>,
    ) -> bool {
        let mut folded = false;
        for e in dropped {
            if !self.counts(ack_epoch, e) {
                folded |= self.fold(&e.user, e.total());
            }
        }
        self.base = if ack_epoch == self.epoch {
            self.base.max(up_to)
        } else {
            up_to
        };
        self.epoch = ack_epoch;
        folded
    }

    /// Takes the controller's figures. `entries` are the ledger's (of `ledger_epoch`) now.
    ///
    /// A partial message moves the whole book to its `(epoch, up_to)`, so the users it does
    /// not list are re-based first: entries the message counts and the book did not are folded
    /// into their figures. Entries the book counted and the message does not (a message older
    /// than the book's base) cannot be taken out again: they stay folded and are subtracted
    /// once more, which errs on the side of cutting off.
    pub fn receive<'a>(
        &mut self,
        msg: &Allowances,
        entries: impl IntoIterator<Item = &'a UsageEntry>,
        ledger_epoch: u64,
    ) {
        let listed: BTreeSet<&str> = msg.users.iter().map(|a| a.user.as_str()).collect();
        if msg.complete {
            self.users.clear();
        } else {
            let msg_counts = |e: &UsageEntry| ledger_epoch == msg.epoch && e.seq <= msg.up_to;
            for e in entries {
                if msg_counts(e)
                    && !self.counts(ledger_epoch, e)
                    && !listed.contains(e.user.as_str())
                {
                    self.fold(&e.user, e.total());
                }
            }
        }
        for a in &msg.users {
            let figures = Figures {
                remaining: a.remaining,
                expires_at: a.expires_at,
            };
            if figures == Figures::default() {
                self.users.remove(&a.user);
            } else {
                self.users.insert(a.user.clone(), figures);
            }
        }
        (self.epoch, self.base) = (msg.epoch, msg.up_to);
    }

    /// Bytes of the ledger's entries the figures do not count, per limited user.
    pub fn spent<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a UsageEntry>,
        ledger_epoch: u64,
    ) -> BTreeMap<String, u64> {
        let mut spent: BTreeMap<String, u64> = BTreeMap::new();
        if !self.users.values().any(|f| f.remaining.is_some()) {
            return spent;
        }
        for e in entries {
            let limited = self
                .users
                .get(&e.user)
                .is_some_and(|f| f.remaining.is_some());
            if limited && !self.counts(ledger_epoch, e) {
                let s = spent.entry(e.user.clone()).or_default();
                *s = s.saturating_add(e.total());
            }
        }
        spent
    }

    /// Users to cut off now, by id: bytes used up (`remaining` 0 blocks at once) or expired
    /// (which wins when both hold).
    pub fn blocked<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a UsageEntry>,
        ledger_epoch: u64,
        now: i64,
    ) -> BTreeMap<String, CutOffCause> {
        self.decide(&self.spent(entries, ledger_epoch), now)
    }

    fn decide(&self, spent: &BTreeMap<String, u64>, now: i64) -> BTreeMap<String, CutOffCause> {
        self.users
            .iter()
            .filter_map(|(user, f)| {
                let used = spent.get(user).copied().unwrap_or(0);
                if f.expires_at.is_some_and(|t| t <= now) {
                    Some((user.clone(), CutOffCause::Expired))
                } else if f.remaining.is_some_and(|r| used >= r) {
                    Some((user.clone(), CutOffCause::DataUsedUp))
                } else {
                    None
                }
            })
            .collect()
    }
}

/// The desired state without the users cut off (by id): what this host runs. Borrowed when
/// no user of it is cut off.
pub fn effective<'a>(
    desired: &'a DesiredState,
    blocked: &BTreeMap<String, CutOffCause>,
) -> Cow<'a, DesiredState> {
    if blocked.is_empty() || !desired.users.values().any(|u| blocked.contains_key(&u.id)) {
        return Cow::Borrowed(desired);
    }
    Cow::Owned(DesiredState {
        generation: desired.generation,
        services: desired.services.clone(),
        users: desired
            .users
            .iter()
            .filter(|(_, u)| !blocked.contains_key(&u.id))
            .map(|(name, u)| (name.clone(), u.clone()))
            .collect(),
        firewall: desired.firewall.clone(),
    })
}

/// A user newly cut off, with the figures that decided it (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutOffNote {
    /// The user's id.
    pub user: String,
    pub cause: CutOffCause,
    pub remaining: Option<u64>,
    /// Bytes measured on this host that the figures did not count yet.
    pub spent: u64,
}

/// Who came and went in one [`Enforcer::update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transition {
    pub cut_off: Vec<CutOffNote>,
    /// Ids of users of the desired state that run on this host again.
    pub restored: Vec<String>,
}

impl Transition {
    pub fn is_empty(&self) -> bool {
        self.cut_off.is_empty() && self.restored.is_empty()
    }
}

/// The book, the users of the desired state cut off now, and what to report.
#[derive(Debug, Clone, Default)]
pub struct Enforcer {
    pub book: AllowanceBook,
    /// Users of the desired state cut off on this host, by id.
    blocked: BTreeMap<String, CutOffCause>,
    /// [`effective`] of the desired state it was made from (that state's generation and
    /// digest), kept so a tick does not copy a large state; `None` while nobody is cut off.
    cached: Option<(u64, Digest, DesiredState)>,
    /// Cut-offs a controller of protocol 5 has not heard of, the latest per user id.
    unreported: BTreeMap<String, CutOff>,
}

impl Enforcer {
    pub fn new(book: AllowanceBook) -> Enforcer {
        Enforcer {
            book,
            ..Enforcer::default()
        }
    }

    /// Users of the desired state cut off now, by id.
    pub fn blocked(&self) -> &BTreeMap<String, CutOffCause> {
        &self.blocked
    }

    /// Decides again who of `desired` is cut off at `now` (Unix seconds); every user newly cut
    /// off is queued for the controller. `entries` are the ledger's (of `ledger_epoch`).
    pub fn update<'a>(
        &mut self,
        desired: &TrackedState,
        entries: impl IntoIterator<Item = &'a UsageEntry>,
        ledger_epoch: u64,
        now: i64,
    ) -> Transition {
        let spent = self.book.spent(entries, ledger_epoch);
        let mut next = self.book.decide(&spent, now);
        if next.is_empty() && self.blocked.is_empty() {
            return Transition::default();
        }
        // One pass over the users, keeping only the ids that matter (a host may hold 100,000).
        let ids: BTreeSet<&str> = desired
            .state()
            .users
            .values()
            .map(|u| u.id.as_str())
            .filter(|id| next.contains_key(*id) || self.blocked.contains_key(*id))
            .collect();
        next.retain(|id, _| ids.contains(id.as_str()));
        let mut t = Transition::default();
        for (user, cause) in &next {
            if self.blocked.contains_key(user) {
                continue;
            }
            t.cut_off.push(CutOffNote {
                user: user.clone(),
                cause: *cause,
                remaining: self.book.users.get(user).and_then(|f| f.remaining),
                spent: spent.get(user).copied().unwrap_or(0),
            });
            let cut_off = CutOff {
                user: user.clone(),
                cause: *cause,
                at: now,
            };
            self.unreported.insert(user.clone(), cut_off);
        }
        // A user who left the desired state is not back: only those still in it are restored.
        t.restored = self
            .blocked
            .keys()
            .filter(|id| !next.contains_key(*id) && ids.contains(id.as_str()))
            .cloned()
            .collect();
        let same_users = next.keys().eq(self.blocked.keys());
        self.blocked = next;
        let fresh = self.cached.as_ref().is_some_and(|(generation, digest, _)| {
            *generation == desired.generation() && *digest == desired.digest()
        });
        if !(same_users && fresh) {
            self.cached = match effective(desired.state(), &self.blocked) {
                Cow::Borrowed(_) => None,
                Cow::Owned(s) => Some((desired.generation(), desired.digest(), s)),
            };
        }
        t
    }

    /// Whether an [`update`](Self::update) now would cut off a user of `desired` who is not
    /// cut off yet (the session then reads the counters first, so the user's last bytes are
    /// in the ledger before the user's counters go).
    pub fn would_cut_off<'a>(
        &self,
        desired: &TrackedState,
        entries: impl IntoIterator<Item = &'a UsageEntry>,
        ledger_epoch: u64,
        now: i64,
    ) -> bool {
        let next = self.book.blocked(entries, ledger_epoch, now);
        let new = |id: &String| next.contains_key(id) && !self.blocked.contains_key(id);
        next.keys().any(new) && desired.state().users.values().any(|u| new(&u.id))
    }

    /// What the host runs for `desired`: cached when [`update`](Self::update) saw this state,
    /// computed otherwise (never the desired state with a cut-off user back in).
    pub fn effective<'a>(&'a self, desired: &'a TrackedState) -> Cow<'a, DesiredState> {
        match &self.cached {
            Some((generation, digest, s))
                if *generation == desired.generation() && *digest == desired.digest() =>
            {
                Cow::Borrowed(s)
            }
            _ => effective(desired.state(), &self.blocked),
        }
    }

    /// The cut-offs to send in an [`Enforced`](vpn_shared::proto::AgentMsg::Enforced), oldest
    /// first; they stay queued until [`reported`](Self::reported).
    pub fn unreported(&self) -> Vec<CutOff> {
        let mut v: Vec<CutOff> = self.unreported.values().cloned().collect();
        v.sort_by_key(|c| c.at);
        v
    }

    /// The controller has heard of these.
    pub fn reported(&mut self, sent: &[CutOff]) {
        for c in sent {
            if self.unreported.get(&c.user) == Some(c) {
                self.unreported.remove(&c.user);
            }
        }
    }
}

#[cfg(test)]
mod tests;
