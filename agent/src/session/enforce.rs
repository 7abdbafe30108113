//! The IO side of offline enforcement (SPEC §2.6) on the [`Agent`]: the allowances' file,
//! deciding again after each event (the decisions are [`crate::allowance`]'s), applying the
//! effective state when that changed, and telling the controller.

use std::collections::BTreeMap;

use quinn::SendStream;
use tracing::{debug, error, info, warn};
use vpn_shared::proto::frame::write_frame;
use vpn_shared::proto::{AgentMsg, Allowances, ResourceResult};

use super::{Agent, unix_now};
use crate::allowance::{ALLOWANCES_RESOURCE, AllowanceBook, Enforcer, Transition};
use crate::ledger::Ledger;
use crate::state;

impl Agent {
    /// The allowances the last run saved; unreadable ones are warned about and the agent
    /// enforces none until the controller sends them again (never a crash).
    pub(super) fn load_allowances(&mut self) {
        match state::load_as::<AllowanceBook>(&self.paths.allowances) {
            Ok(Some(book)) => {
                info!(
                    users = book.users.len(),
                    epoch = book.epoch,
                    up_to = book.base,
                    "allowances loaded; enforced without the controller"
                );
                self.enforcer = Enforcer::new(book);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "saved allowances unusable; none enforced until the controller sends them")
            }
        }
    }

    /// Saves the allowances (after every change that matters); a failure is logged when it
    /// changes and reported as `host/allowances`.
    pub(super) fn save_allowances(&mut self) {
        match state::save_as(&self.paths.allowances, &self.enforcer.book) {
            Ok(()) => {
                if self.allowances_error.take().is_some() {
                    info!("allowances saved again");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if self.allowances_error.as_deref() != Some(msg.as_str()) {
                    error!(error = %msg, "cannot save the allowances; a restart would enforce older ones");
                }
                self.allowances_error = Some(msg);
            }
        }
    }

    /// `host/allowances`, only while it fails.
    pub(super) fn allowances_result(&self) -> Option<ResourceResult> {
        self.allowances_error
            .as_deref()
            .map(|e| ResourceResult::error(ALLOWANCES_RESOURCE, e))
    }

    /// Decides again who of the desired state is cut off and logs who went and who came
    /// back. Touches nothing on the host.
    pub(super) fn decide(&mut self) -> Transition {
        let epoch = self.ledger.as_ref().map_or(0, Ledger::epoch);
        let entries = self.ledger.iter().flat_map(Ledger::entries);
        let t = self
            .enforcer
            .update(&self.current, entries, epoch, unix_now());
        self.metrics.users_cut_off(self.enforcer.blocked().len());
        if t.is_empty() {
            return t;
        }
        let names: BTreeMap<&str, &str> = self
            .current
            .state()
            .users
            .values()
            .map(|u| (u.id.as_str(), u.name.as_str()))
            .collect();
        let name = |id: &str| names.get(id).copied().unwrap_or("?");
        for n in &t.cut_off {
            info!(
                user = name(&n.user),
                id = %n.user,
                cause = ?n.cause,
                remaining = n.remaining,
                spent = n.spent,
                "user cut off on this host"
            );
        }
        for id in &t.restored {
            info!(user = name(id), %id, "user restored on this host");
        }
        t
    }

    /// Decides again and, when that changed who is cut off, applies the effective state (the
    /// driver removes a user's port or credential hot). `read_first`: read the counters
    /// before cutting anyone off, so the last bytes a user's counters hold are in the ledger
    /// (a usage tick has just read them).
    pub(super) async fn enforce(&mut self, read_first: bool) {
        if read_first {
            let epoch = self.ledger.as_ref().map_or(0, Ledger::epoch);
            let entries = self.ledger.iter().flat_map(Ledger::entries);
            if self
                .enforcer
                .would_cut_off(&self.current, entries, epoch, unix_now())
            {
                self.read_usage().await;
            }
        }
        if !self.decide().is_empty() {
            self.apply_effective(false).await;
        }
    }

    /// Takes the controller's allowances (whenever they come), saves them and enforces them.
    pub(super) async fn on_allowances(&mut self, a: &Allowances) {
        let epoch = self.ledger.as_ref().map_or(0, Ledger::epoch);
        let entries = self.ledger.iter().flat_map(Ledger::entries);
        self.enforcer.book.receive(a, entries, epoch);
        debug!(
            epoch = a.epoch,
            up_to = a.up_to,
            complete = a.complete,
            users = a.users.len(),
            "allowances received"
        );
        self.save_allowances();
        self.enforce(true).await;
    }

    /// Before the ledger drops the entries an ack of its own epoch names: folds those the
    /// allowances do not count yet into them, and saves them first (a crash in between then
    /// finds the entries still in the ledger, counted, rather than gone and never subtracted).
    pub(super) fn fold_acked(&mut self, epoch: u64, up_to: u64) {
        // Another epoch's ack (an old ledger's) drops nothing.
        let Some(l) = self.ledger.as_ref().filter(|l| l.epoch() == epoch) else {
            return;
        };
        let dropped = l.entries().take_while(|e| e.seq <= up_to);
        if self.enforcer.book.on_ack(epoch, up_to, dropped) {
            self.save_allowances();
        }
    }

    /// Sends the cut-offs the controller has not heard of, if any (protocol 5 on).
    pub(super) async fn send_cut_offs(&mut self, send: &mut SendStream) -> Result<(), String> {
        let cut_offs = self.enforcer.unreported();
        if cut_offs.is_empty() {
            return Ok(());
        }
        write_frame(send, &AgentMsg::Enforced(cut_offs.clone()))
            .await
            .map_err(|e| e.to_string())?;
        info!(
            users = cut_offs.len(),
            "cut-offs reported to the controller"
        );
        self.enforcer.reported(&cut_offs);
        Ok(())
    }
}
