//! What the agent tells the controller about its host between applies (SPEC §2.8): the pure
//! decisions behind [`AgentReport`]s — which repairs a reconcile made, whether a report is worth
//! sending, which failures are new enough to log — with no IO, so they are unit-tested here.
//! The session gathers the facts (Docker, the certificate, the disk) and sends.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use vpn_shared::proto::{AgentReport, ContainerStatus, Outcome, Repair, ResourceResult};

use crate::apply::ApplyReport;
use crate::apply::docker::EnsureOutcome;
use crate::drivers::{service_resource, user_resource};

/// An unchanged report is still sent this often, so the controller's view never goes stale.
pub const HEARTBEAT: Duration = Duration::from_secs(60);
/// Repairs kept for the next report while the controller is away; the oldest go first.
pub const MAX_PENDING_REPAIRS: usize = 50;

/// Label a driver puts on each container: the service it serves.
pub const LABEL_SERVICE: &str = "vpn-fleet.service";
/// Label on a container of one user alone (engines with a process per user).
pub const LABEL_USER: &str = "vpn-fleet.user";

/// What the host's network half changed in one reconcile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetRepairs {
    /// The nftables table was installed again (gone, or edited by hand).
    pub firewall_reinstalled: bool,
    /// tc commands ran to bring the limits back.
    pub shaping_restored: bool,
}

/// The repairs one reconcile made: anything it had to change, since a reconcile re-applies a
/// state that was already applied.
pub fn repairs(report: &ApplyReport, net: NetRepairs, at: i64) -> Vec<Repair> {
    let mut out = Vec::new();
    for (key, outcome) in &report.containers {
        let what = match outcome {
            EnsureOutcome::Unchanged => continue,
            EnsureOutcome::Created => "was missing; created",
            EnsureOutcome::Started => "was stopped; started",
            EnsureOutcome::Recreated => "did not match its spec; recreated",
        };
        let resource = match key.split_once(':') {
            Some((service, user)) => user_resource(user, service),
            None => service_resource(key),
        };
        let container = report
            .container_names
            .get(key)
            .map_or(key.as_str(), String::as_str);
        out.push(Repair {
            resource,
            action: format!("container {container} {what}"),
            at,
        });
    }
    for (service, (adds, removes)) in &report.user_changes {
        out.push(Repair {
            resource: service_resource(service),
            action: format!(
                "engine users brought back to the state: {adds} added, {removes} removed"
            ),
            at,
        });
    }
    if net.firewall_reinstalled {
        out.push(Repair {
            resource: "host/firewall".into(),
            action: "table inet vpn_agent installed again".into(),
            at,
        });
    }
    if net.shaping_restored {
        out.push(Repair {
            resource: "host/shaping".into(),
            action: "tc classes and filters restored".into(),
            at,
        });
    }
    out
}

/// Repairs waiting for the next report, bounded: a host cut off for a week that repairs the
/// same thing every 10 s keeps only the latest [`MAX_PENDING_REPAIRS`].
#[derive(Debug, Default)]
pub struct PendingRepairs {
    repairs: VecDeque<Repair>,
    /// How many were dropped since the last report, so the report can say so.
    dropped: usize,
}

impl PendingRepairs {
    pub fn extend(&mut self, repairs: impl IntoIterator<Item = Repair>) {
        for r in repairs {
            if self.repairs.len() == MAX_PENDING_REPAIRS {
                self.repairs.pop_front();
                self.dropped += 1;
            }
            self.repairs.push_back(r);
        }
    }

    /// What the next report carries (the oldest kept first, after a line saying how many
    /// older ones were dropped, if any).
    pub fn peek(&self) -> Vec<Repair> {
        let dropped = (self.dropped > 0).then(|| Repair {
            resource: "host/repairs".into(),
            action: format!("{} older repairs not kept", self.dropped),
            at: self.repairs.front().map_or(0, |r| r.at),
        });
        dropped
            .into_iter()
            .chain(self.repairs.iter().cloned())
            .collect()
    }

    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The report carrying them was sent.
    pub fn clear(&mut self) {
        self.repairs.clear();
        self.dropped = 0;
    }
}

/// The last report sent in this session, and when.
#[derive(Debug, Clone)]
pub struct LastSent {
    pub report: AgentReport,
    pub at: Instant,
}

/// Whether `next` is worth sending: the first of a session, one with repairs, one whose content
/// (the clock aside) differs from the last, or a [`HEARTBEAT`] after the last.
pub fn should_send(last: Option<&LastSent>, next: &AgentReport, now: Instant) -> bool {
    let Some(last) = last else {
        return true;
    };
    if !next.repairs.is_empty() || now.duration_since(last.at) >= HEARTBEAT {
        return true;
    }
    // Repairs are news once: a report without any after one with some says nothing new. The
    // ledger's backlog moves with every reading and ack; the heartbeat carries it.
    let content = |r: &AgentReport| AgentReport {
        sent_at_ms: 0,
        repairs: Vec::new(),
        ledger_backlog: r.ledger_backlog.map(|_| 0),
        ..r.clone()
    };
    content(&last.report) != content(next)
}

/// The resource a managed container serves, from the labels its driver put on it.
pub fn container_resource(labels: &BTreeMap<String, String>) -> String {
    match (labels.get(LABEL_SERVICE), labels.get(LABEL_USER)) {
        (Some(service), Some(user)) => user_resource(user, service),
        (Some(service), None) => service_resource(service),
        (None, _) => "host/containers".into(),
    }
}

/// A container as the report lists it.
pub fn container_status(
    name: &str,
    labels: &BTreeMap<String, String>,
    running: bool,
    restarts: i64,
) -> ContainerStatus {
    ContainerStatus {
        name: name.to_owned(),
        resource: container_resource(labels),
        running,
        restarts: u32::try_from(restarts.max(0)).unwrap_or(u32::MAX),
    }
}

/// The failing resources of a result set, with their messages.
pub fn failures(results: &[ResourceResult]) -> BTreeMap<String, String> {
    results
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Ok => None,
            Outcome::Error(e) => Some((r.resource.clone(), e.clone())),
        })
        .collect()
}

/// How the failure set changed between two reconciles, so each change is logged once instead
/// of every 10 s.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FailureChange {
    /// Resources failing now that did not fail before, or fail with another message.
    pub failing: Vec<(String, String)>,
    /// Resources that failed before and do not now.
    pub recovered: Vec<String>,
}

pub fn failure_change(
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> FailureChange {
    FailureChange {
        failing: now
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        recovered: before
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> AgentReport {
        AgentReport {
            sent_at_ms: 1_000,
            generation: 7,
            results: vec![ResourceResult::ok("service/ss")],
            ..Default::default()
        }
    }

    #[test]
    fn a_container_removed_by_hand_and_lost_users_are_repairs() {
        let mut applied = ApplyReport::default();
        applied
            .containers
            .insert("ss".into(), EnsureOutcome::Created);
        applied
            .container_names
            .insert("ss".into(), "vpn-h1-ss".into());
        applied
            .containers
            .insert("vless:bob".into(), EnsureOutcome::Started);
        applied
            .containers
            .insert("other".into(), EnsureOutcome::Unchanged);
        applied.user_changes.insert("ss".into(), (3, 0));
        let got = repairs(
            &applied,
            NetRepairs {
                firewall_reinstalled: true,
                shaping_restored: false,
            },
            42,
        );
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|r| (r.resource.as_str(), r.action.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("service/ss", "container vpn-h1-ss was missing; created"),
                ("user/bob@vless", "container vless:bob was stopped; started"),
                (
                    "service/ss",
                    "engine users brought back to the state: 3 added, 0 removed"
                ),
                ("host/firewall", "table inet vpn_agent installed again"),
            ]
        );
        assert!(got.iter().all(|r| r.at == 42));
        assert!(repairs(&ApplyReport::default(), NetRepairs::default(), 1).is_empty());
    }

    #[test]
    fn reports_go_when_new_changed_repaired_or_a_minute_old() {
        let t0 = Instant::now();
        let last = LastSent {
            report: report(),
            at: t0,
        };
        assert!(should_send(None, &report(), t0), "first of the session");

        let mut same = report();
        same.sent_at_ms = 9_000;
        assert!(!should_send(
            Some(&last),
            &same,
            t0 + Duration::from_secs(10)
        ));
        assert!(should_send(Some(&last), &same, t0 + HEARTBEAT));

        let mut failing = report();
        failing.results = vec![ResourceResult::error("service/ss", "no such image")];
        assert!(should_send(
            Some(&last),
            &failing,
            t0 + Duration::from_secs(10)
        ));

        let mut repaired = report();
        repaired.repairs.push(Repair {
            resource: "service/ss".into(),
            action: "created".into(),
            at: 1,
        });
        assert!(should_send(
            Some(&last),
            &repaired,
            t0 + Duration::from_secs(10)
        ));
        // After the repair went out, the next quiet report is not news.
        let after_repair = LastSent {
            report: repaired,
            at: t0,
        };
        assert!(!should_send(
            Some(&after_repair),
            &same,
            t0 + Duration::from_secs(10)
        ));

        let mut backlog = report();
        backlog.ledger_backlog = Some(1_234);
        let with_backlog = LastSent {
            report: AgentReport {
                ledger_backlog: Some(7),
                ..report()
            },
            at: t0,
        };
        assert!(
            !should_send(Some(&with_backlog), &backlog, t0 + Duration::from_secs(10)),
            "a moving backlog waits for the heartbeat"
        );

        let mut restarted = report();
        restarted.containers.push(ContainerStatus {
            name: "vpn-h1-ss".into(),
            resource: "service/ss".into(),
            running: true,
            restarts: 1,
        });
        assert!(should_send(
            Some(&last),
            &restarted,
            t0 + Duration::from_secs(10)
        ));
    }

    #[test]
    fn pending_repairs_keep_the_latest_fifty() {
        let mut p = PendingRepairs::default();
        p.extend((0..60).map(|i| Repair {
            resource: "service/ss".into(),
            action: format!("repair {i}"),
            at: i,
        }));
        let kept = p.peek();
        assert_eq!(kept.len(), MAX_PENDING_REPAIRS + 1);
        assert_eq!(kept[0].action, "10 older repairs not kept");
        assert_eq!(kept[1].at, 10);
        assert_eq!(kept[MAX_PENDING_REPAIRS].at, 59);
        assert_eq!(p.dropped(), 10);
        p.clear();
        assert!(p.peek().is_empty() && p.dropped() == 0);
    }

    #[test]
    fn failures_are_logged_once_per_change() {
        let a = failures(&[
            ResourceResult::error("service/ss", "no such image"),
            ResourceResult::ok("host/firewall"),
        ]);
        assert_eq!(failure_change(&a, &a), FailureChange::default());
        let b = failures(&[ResourceResult::error("service/ss", "bind refused")]);
        assert_eq!(
            failure_change(&a, &b).failing,
            [("service/ss".to_owned(), "bind refused".to_owned())]
        );
        let change = failure_change(&b, &BTreeMap::new());
        assert_eq!(change.recovered, ["service/ss"]);
        assert!(change.failing.is_empty());
    }

    #[test]
    fn containers_name_the_resource_they_serve() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert_eq!(
            container_resource(&labels(&[(LABEL_SERVICE, "ss")])),
            "service/ss"
        );
        assert_eq!(
            container_resource(&labels(&[(LABEL_SERVICE, "vl"), (LABEL_USER, "bob")])),
            "user/bob@vl"
        );
        let s = container_status("c", &labels(&[]), false, -1);
        assert_eq!((s.resource.as_str(), s.restarts), ("host/containers", 0));
    }
}
