//! The firewall's block lists: rules that refuse an address or network on every service port of
//! one host, or of every host (fleet-wide, including hosts added later).
//!
//! A host's policy is the union of the fleet-wide rules and its own. A change pushes the new
//! policy (`SetFirewall`) to exactly the hosts whose policy it changes: blocking fleet-wide what
//! a host already blocks on its own changes nothing there, and neither does removing a host rule
//! that a fleet-wide rule still covers. Whether a host is affected is decided from the one target
//! that changed, so only affected hosts have their (possibly long) policy rendered.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::SqliteConnection;
use vpn_shared::model::{Change, FirewallSpec};

use super::error::{Result, StoreError};
use super::rows::{FirewallRuleRow, Servers};
use super::{HostPush, Mutation, Store, render, validate};

/// Where one rule applies: every host (`host_id` `None`) or one host.
#[derive(Debug, Clone)]
struct Scope {
    host_id: Option<String>,
    server: Option<String>,
}

impl Scope {
    /// How errors and summaries name the scope.
    fn label(&self) -> &str {
        self.server.as_deref().unwrap_or("all servers")
    }

    fn row(&self, target: &str, created_at: i64) -> FirewallRuleRow {
        FirewallRuleRow {
            target: target.to_owned(),
            host_id: self.host_id.clone(),
            server: self.server.clone(),
            created_at,
        }
    }
}

/// The hosts whose policy holds one target: all of them, or a set of host ids.
#[derive(Debug)]
enum Covered {
    All,
    Hosts(HashSet<String>),
}

impl Covered {
    fn contains(&self, host_id: &str) -> bool {
        match self {
            Covered::All => true,
            Covered::Hosts(ids) => ids.contains(host_id),
        }
    }
}

/// Resolves the operator's servers to rule scopes: one fleet-wide scope, or one per named host
/// (names deduplicated, unknown names refused).
async fn scopes(conn: &mut SqliteConnection, servers: &Servers) -> Result<Vec<Scope>> {
    let Servers::Named(names) = servers else {
        return Ok(vec![Scope {
            host_id: None,
            server: None,
        }]);
    };
    if names.is_empty() {
        return Err(StoreError::invalid(
            "servers",
            "name at least one server, or all servers",
        ));
    }
    let mut seen = HashSet::new();
    let mut scopes = Vec::with_capacity(names.len());
    for name in names.iter().filter(|n| seen.insert(n.as_str())) {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM hosts WHERE name = ?1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
        let id = id.ok_or_else(|| StoreError::not_found("server", name))?;
        scopes.push(Scope {
            host_id: Some(id),
            server: Some(name.clone()),
        });
    }
    Ok(scopes)
}

/// Which hosts currently block `target`.
async fn covered(conn: &mut SqliteConnection, target: &str) -> Result<Covered> {
    let hosts: Vec<Option<String>> =
        sqlx::query_scalar("SELECT host_id FROM firewall_rules WHERE target = ?1")
            .bind(target)
            .fetch_all(conn)
            .await?;
    let mut ids = HashSet::with_capacity(hosts.len());
    for host in hosts {
        match host {
            None => return Ok(Covered::All),
            Some(id) => ids.insert(id),
        };
    }
    Ok(Covered::Hosts(ids))
}

/// The firewall policy of each of `hosts` (every host when `None`), by host id.
pub(super) async fn host_specs(
    conn: &mut SqliteConnection,
    hosts: Option<&[String]>,
) -> Result<BTreeMap<String, FirewallSpec>> {
    let fleet: Vec<String> =
        sqlx::query_scalar("SELECT target FROM firewall_rules WHERE host_id IS NULL")
            .fetch_all(&mut *conn)
            .await?;
    let (ids, own): (Vec<String>, Vec<(String, String)>) = match hosts {
        Some(ids) => {
            let json = ids_json(ids)?;
            let own = sqlx::query_as(
                "SELECT host_id, target FROM firewall_rules \
                 WHERE host_id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json)
            .fetch_all(&mut *conn)
            .await?;
            (ids.to_vec(), own)
        }
        None => {
            let ids = sqlx::query_scalar("SELECT id FROM hosts")
                .fetch_all(&mut *conn)
                .await?;
            let own = sqlx::query_as(
                "SELECT host_id, target FROM firewall_rules WHERE host_id IS NOT NULL",
            )
            .fetch_all(&mut *conn)
            .await?;
            (ids, own)
        }
    };
    let mut by_host: HashMap<String, Vec<String>> = HashMap::new();
    for (host, target) in own {
        by_host.entry(host).or_default().push(target);
    }
    Ok(ids
        .into_iter()
        .map(|id| {
            let spec = render::firewall_spec(&fleet, by_host.get(&id).into_iter().flatten());
            (id, spec)
        })
        .collect())
}

/// A list of host ids as a JSON array, for `json_each`: one statement however many hosts.
fn ids_json(ids: &[String]) -> Result<String> {
    serde_json::to_string(ids).map_err(|e| StoreError::corrupt("host ids", e))
}

/// After a rule for `target` was added or removed in `scopes`: bumps every host whose policy
/// changed (its coverage of `target` differs from `before`) and pushes it its new policy.
async fn pushes(
    conn: &mut SqliteConnection,
    target: &str,
    scopes: &[Scope],
    before: &Covered,
) -> Result<Vec<HostPush>> {
    let candidates: Vec<String> = if scopes.iter().any(|s| s.host_id.is_none()) {
        sqlx::query_scalar("SELECT id FROM hosts")
            .fetch_all(&mut *conn)
            .await?
    } else {
        scopes.iter().filter_map(|s| s.host_id.clone()).collect()
    };
    let after = covered(conn, target).await?;
    let changed: Vec<String> = candidates
        .into_iter()
        .filter(|h| before.contains(h) != after.contains(h))
        .collect();
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let bumped: Vec<(String, u64)> = sqlx::query_as(
        "UPDATE hosts SET generation = generation + 1 \
         WHERE id IN (SELECT value FROM json_each(?1)) RETURNING id, generation",
    )
    .bind(ids_json(&changed)?)
    .fetch_all(&mut *conn)
    .await?;
    let mut specs = host_specs(conn, Some(&changed)).await?;
    Ok(render::pushes(bumped, |host| {
        let spec = specs.remove(host).unwrap_or_default();
        vec![Change::SetFirewall(spec)]
    }))
}

impl Store {
    /// Blocks `target` (an address or CIDR network, normalized) on the given servers: one
    /// fleet-wide rule for [`Servers::All`], else one rule per named server. A rule that
    /// already exists is refused as a duplicate and nothing is written.
    pub async fn block(
        &self,
        target: &str,
        servers: &Servers,
        now: i64,
    ) -> Result<Mutation<Vec<FirewallRuleRow>>> {
        let target = validate::firewall_target(target)?;
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let scopes = scopes(conn, servers).await?;
        let before = covered(conn, &target).await?;
        for scope in &scopes {
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM firewall_rules WHERE target = ?1 AND host_id IS ?2",
            )
            .bind(&target)
            .bind(&scope.host_id)
            .fetch_optional(&mut *conn)
            .await?;
            if exists.is_some() {
                return Err(StoreError::Duplicate {
                    what: "firewall rule",
                    name: format!("{target} on {}", scope.label()),
                });
            }
            sqlx::query(
                "INSERT INTO firewall_rules (target, host_id, created_at) VALUES (?1, ?2, ?3)",
            )
            .bind(&target)
            .bind(&scope.host_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        let mut pushes = pushes(conn, &target, &scopes, &before).await?;
        self.finish(w, &mut pushes).await?;
        let rules = scopes.iter().map(|s| s.row(&target, now)).collect();
        Ok(Mutation {
            value: rules,
            pushes,
        })
    }

    /// Removes the rules for `target` in exactly the given scope (the fleet-wide rule for
    /// [`Servers::All`]; per-server rules stay). A rule that does not exist is `NotFound` and
    /// nothing is removed.
    pub async fn unblock(
        &self,
        target: &str,
        servers: &Servers,
    ) -> Result<Mutation<Vec<FirewallRuleRow>>> {
        let target = validate::firewall_target(target)?;
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let scopes = scopes(conn, servers).await?;
        let before = covered(conn, &target).await?;
        let mut removed = Vec::with_capacity(scopes.len());
        for scope in &scopes {
            let created: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM firewall_rules WHERE target = ?1 AND host_id IS ?2 \
                 RETURNING created_at",
            )
            .bind(&target)
            .bind(&scope.host_id)
            .fetch_all(&mut *conn)
            .await?;
            let created = created.first().copied().ok_or_else(|| {
                StoreError::not_found("firewall rule", format!("{target} on {}", scope.label()))
            })?;
            removed.push(scope.row(&target, created));
        }
        let mut pushes = pushes(conn, &target, &scopes, &before).await?;
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: removed,
            pushes,
        })
    }

    /// Every rule, by target, the fleet-wide rule of a target before its per-server ones.
    pub async fn firewall_rules(&self) -> Result<Vec<FirewallRuleRow>> {
        let rows: Vec<(String, Option<String>, Option<String>, i64)> = sqlx::query_as(
            "SELECT f.target, f.host_id, h.name, f.created_at FROM firewall_rules f \
             LEFT JOIN hosts h ON h.id = f.host_id ORDER BY f.target, h.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(target, host_id, server, created_at)| FirewallRuleRow {
                target,
                host_id,
                server,
                created_at,
            })
            .collect())
    }
}
