//! The host's network policy around the containers: tc shaping and the nftables table.
//!
//! Probed once at start: what the kernel lacks is logged, reported to the controller's health
//! view, and disables only what depends on it. Applied after the containers on every state, and
//! idempotent: with nothing changed neither `tc` nor `nft` rewrites anything.

use std::collections::BTreeMap;

use tracing::{info, warn};
use vpn_shared::model::DesiredState;
use vpn_shared::proto::{HostHealth, ResourceResult};

use crate::firewall::{Count, Firewall};
use crate::report::NetRepairs;
use crate::shaping::apply::{DEFAULT_CEILING_BPS, Shaper, detect_egress_iface};
use crate::shaping::render::Capabilities;
use crate::shaping::{kernel, plan};

/// What the operator configured for shaping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Interface to shape; `None` detects the default route's device.
    pub shaping_iface: Option<String>,
    /// The link's real speed in bit/s; `None` is 10 gbit.
    pub link_ceiling_bps: Option<u64>,
    pub firewall: bool,
    pub shaping: bool,
}

pub struct HostNet {
    shaper: Option<Shaper>,
    /// One shaper per WireGuard interface (by name), made when a limit first needs it: the
    /// tunnel's packets are plaintext only there. Same capabilities and ceiling as `shaper`.
    tunnel_shapers: BTreeMap<String, Shaper>,
    tunnel_setup: Option<(u64, Capabilities)>,
    firewall: Option<Firewall>,
    health: HostHealth,
    /// Bytes per firewall counter read before each table replacement (and by
    /// [`HostNet::port_readings`]); the ledger drains the ports of engines without counters of
    /// their own (SPEC §2.6).
    traffic: BTreeMap<String, Count>,
}

impl HostNet {
    /// Probes the kernel and tools and sets up what is usable.
    pub async fn setup(config: &NetConfig) -> HostNet {
        let mut missing = Vec::new();
        let mut tunnel_setup = None;
        let shaper = if config.shaping {
            let report = kernel::probe().await;
            report.log();
            missing.extend(report.effects());
            tunnel_setup = Some((
                config.link_ceiling_bps.unwrap_or(DEFAULT_CEILING_BPS),
                report.capabilities(),
            ));
            match &config.shaping_iface {
                Some(i) => Some(i.clone()),
                None => match detect_egress_iface(None).await {
                    Ok(i) => Some(i),
                    Err(e) => {
                        missing.push(format!(
                            "egress interface not found ({e}): disables bandwidth limits"
                        ));
                        None
                    }
                },
            }
            .map(|iface| {
                info!(%iface, "bandwidth limits shape this interface");
                Shaper::new(
                    &iface,
                    config.link_ceiling_bps.unwrap_or(DEFAULT_CEILING_BPS),
                    report.capabilities(),
                )
            })
        } else {
            info!("bandwidth limits disabled by configuration");
            missing.push(
                "shaping disabled by configuration (--no-shaping): disables bandwidth limits"
                    .into(),
            );
            clear_shaping(config).await;
            None
        };
        let firewall = if config.firewall {
            let fw = Firewall::new();
            let support = fw.check().await;
            for (feature, why) in &support.missing {
                let line = format!(
                    "nftables {feature:?} ({why}): disables {}",
                    feature.disables()
                );
                warn!(missing = %line, "firewall feature missing");
                missing.push(line);
            }
            support
                .usable()
                .then(|| fw.with_options(support.render_options()))
        } else {
            info!("managed firewall disabled by configuration");
            missing.push("firewall disabled by configuration (--no-firewall): disables block lists and connection rate limits".into());
            // Switching the firewall off must not leave a stale table enforcing old blocks.
            match Firewall::new().remove().await {
                Ok(_) => info!("table inet vpn_agent removed (if it existed)"),
                Err(e) => warn!(error = %e, "could not remove table inet vpn_agent"),
            }
            None
        };
        HostNet {
            shaper,
            tunnel_shapers: BTreeMap::new(),
            tunnel_setup,
            firewall,
            health: HostHealth { missing },
            traffic: BTreeMap::new(),
        }
    }

    pub fn health(&self) -> &HostHealth {
        &self.health
    }

    /// Applies the firewall and the shaping for `state`. A policy this host cannot enforce is
    /// an error in the ack, so operators see it instead of a silent "applied".
    pub async fn apply(&mut self, state: &DesiredState) -> Vec<ResourceResult> {
        self.apply_report(state).await.0
    }

    /// Like [`apply`](Self::apply), also saying what had to change: after a reconcile of an
    /// unchanged state, that is drift repaired.
    pub async fn apply_report(
        &mut self,
        state: &DesiredState,
    ) -> (Vec<ResourceResult>, NetRepairs) {
        let mut changed = NetRepairs::default();
        let mut results = Vec::new();
        if self.firewall.is_none() && wants_firewall(state) {
            results.push(ResourceResult::error(
                "host/firewall",
                "block list or connection rate limit not enforced: the firewall is disabled or unusable on this host",
            ));
        }
        if self.shaper.is_none() && wants_shaping(state) {
            results.push(ResourceResult::error(
                "host/shaping",
                "bandwidth limit not enforced: shaping is disabled or unusable on this host",
            ));
        }
        if let Some(fw) = &self.firewall {
            match fw.apply(state).await {
                Ok(outcome) => {
                    changed.firewall_reinstalled = outcome.replaced;
                    self.account(outcome.counters);
                    results.push(ResourceResult::ok("host/firewall"));
                }
                Err(e) => {
                    warn!(error = %e, "firewall not applied");
                    results.push(ResourceResult::error("host/firewall", e.to_string()));
                }
            }
        }
        results.extend(self.apply_tunnels(state, &mut changed).await);
        if let Some(shaper) = &self.shaper {
            let on_egress = plan::plan_where(state, |s| !is_wireguard(s));
            match shaper.apply(&on_egress).await {
                Ok(outcome) => {
                    changed.shaping_restored = outcome.changed();
                    if changed.shaping_restored {
                        info!(
                            tc = outcome.tc_lines.len(),
                            ip = outcome.ip_lines.len(),
                            "bandwidth limits applied"
                        );
                    }
                    results.push(ResourceResult::ok("host/shaping"));
                }
                Err(e) => {
                    warn!(error = %e, "bandwidth limits not applied");
                    results.push(ResourceResult::error("host/shaping", e.to_string()));
                }
            }
        }
        (results, changed)
    }

    /// Shapes each WireGuard service's users on its own interface (resource
    /// `host/shaping/<iface>`). Interfaces of services gone from the state are forgotten: their
    /// qdiscs went with the interface.
    async fn apply_tunnels(
        &mut self,
        state: &DesiredState,
        changed: &mut NetRepairs,
    ) -> Vec<ResourceResult> {
        let Some((ceiling, caps)) = self.tunnel_setup else {
            return Vec::new();
        };
        let mut results = Vec::new();
        let mut seen = Vec::new();
        for svc in state.services.values().filter(|s| is_wireguard(s)) {
            let iface = crate::drivers::wireguard::interface_name(&svc.name);
            let plan = plan::plan_where(state, |s| s.name == svc.name);
            seen.push(iface.clone());
            if plan.is_empty() && !self.tunnel_shapers.contains_key(&iface) {
                continue;
            }
            let shaper = self
                .tunnel_shapers
                .entry(iface.clone())
                .or_insert_with(|| Shaper::new(&iface, ceiling, caps));
            let resource = format!("host/shaping/{iface}");
            match shaper.apply(&plan).await {
                Ok(outcome) => {
                    if outcome.changed() {
                        changed.shaping_restored = true;
                        info!(%iface, tc = outcome.tc_lines.len(), "wireguard bandwidth limits applied");
                    }
                    results.push(ResourceResult::ok(resource));
                }
                Err(e) => {
                    warn!(%iface, error = %e, "wireguard bandwidth limits not applied");
                    results.push(ResourceResult::error(resource, e.to_string()));
                }
            }
        }
        self.tunnel_shapers.retain(|iface, _| seen.contains(iface));
        results
    }

    fn account(&mut self, counters: BTreeMap<String, Count>) {
        crate::ledger::ports::accumulate(&mut self.traffic, counters);
    }

    /// Ledger readings of `services` (engines without counters, a port per user) from the
    /// firewall's per-port counters: reads and resets them, then drains those services' ports
    /// (`ledger::ports`). Empty without a firewall; an `nft` failure keeps what is pending for
    /// the next reading.
    pub async fn port_readings(
        &mut self,
        state: &DesiredState,
        services: &[String],
        baselines: &crate::ledger::delta::Baselines,
    ) -> Vec<crate::ledger::delta::Reading> {
        let Some(fw) = &self.firewall else {
            return Vec::new();
        };
        match fw.read_counters().await {
            Ok(read) => self.account(read),
            Err(e) => warn!(error = %e, "firewall counters not read"),
        }
        crate::ledger::ports::readings(state, services, baselines, &mut self.traffic)
    }
}

fn is_wireguard(s: &vpn_shared::model::ServiceSpec) -> bool {
    matches!(s.options, vpn_shared::model::ServiceOptions::Wireguard(_))
}

fn wants_firewall(state: &DesiredState) -> bool {
    !state.firewall.blocked.is_empty() || state.services.values().any(|s| s.new_conn_rate.is_some())
}

fn wants_shaping(state: &DesiredState) -> bool {
    state.services.values().any(|s| !s.bandwidth.is_unlimited())
        || state.users.values().any(|u| !u.bandwidth.is_unlimited())
}

/// With shaping switched off, removes what an earlier run may have installed.
async fn clear_shaping(config: &NetConfig) {
    let iface = match &config.shaping_iface {
        Some(i) => i.clone(),
        None => match detect_egress_iface(None).await {
            Ok(i) => i,
            Err(_) => return,
        },
    };
    let shaper = Shaper::new(&iface, DEFAULT_CEILING_BPS, Capabilities::ALL);
    if let Err(e) = shaper.clear().await {
        warn!(%iface, error = %e, "could not remove earlier bandwidth limits");
    }
}

#[cfg(test)]
mod tests {
    use vpn_shared::model::{Bandwidth, FirewallSpec, UserSpec};

    use super::*;

    #[test]
    fn only_states_with_limits_or_blocks_need_the_modules() {
        let mut s = DesiredState::default();
        assert!(!wants_firewall(&s) && !wants_shaping(&s));
        s.users.insert(
            "a".into(),
            UserSpec {
                name: "a".into(),
                id: "1".into(),
                credentials: vec![],
                bandwidth: Bandwidth {
                    down_bps: Some(8_000_000),
                    up_bps: None,
                },
            },
        );
        assert!(wants_shaping(&s) && !wants_firewall(&s));
        s.firewall = FirewallSpec {
            blocked: vec!["203.0.113.0/24".into()],
        };
        assert!(wants_firewall(&s));
    }
}
