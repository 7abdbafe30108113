//! Desired state per host, and the loaders the mutations share to compute their pushes inside
//! their own transaction: placement of services and users, credentials, generation bumps.

use std::collections::{HashMap, HashSet};

use sqlx::SqliteConnection;
use vpn_shared::model::{Change, DesiredState, ServiceSpec};

use super::error::{Result, StoreError};
use super::render::{self, ActiveUser, HeldCredential, Placement, UserKey};
use super::rows::{
    SERVING, Servers, bandwidth_from_db, conn_rate_from_db, parse_options, parse_protocol,
};
use super::wireguard::{self, Scope};
use super::{HostPush, Store, firewall};

/// Whose host membership decides which hosts a bump touches.
#[derive(Debug, Clone, Copy)]
pub(super) enum Owner<'a> {
    User(&'a str),
    Service(&'a str),
}

/// Raises by one the generation of every host the owner is placed on (all hosts when `all`),
/// returning each host's id and new generation.
pub(super) async fn bump(
    conn: &mut SqliteConnection,
    all: bool,
    owner: Owner<'_>,
) -> Result<Vec<(String, u64)>> {
    let (sql, key) = match owner {
        Owner::User(id) => (
            "UPDATE hosts SET generation = generation + 1 WHERE ?1 OR id IN \
             (SELECT host_id FROM user_servers WHERE user_id = ?2) RETURNING id, generation",
            id,
        ),
        Owner::Service(name) => (
            "UPDATE hosts SET generation = generation + 1 WHERE ?1 OR id IN \
             (SELECT host_id FROM service_servers WHERE service = ?2) RETURNING id, generation",
            name,
        ),
    };
    let bumped = sqlx::query_as::<_, (String, u64)>(sql)
        .bind(all)
        .bind(key)
        .fetch_all(conn)
        .await?;
    Ok(bumped)
}

/// Resolves operator-given server names to host ids: `(all, ids)`, names deduplicated.
pub(super) async fn resolve_servers(
    conn: &mut SqliteConnection,
    servers: &Servers,
) -> Result<(bool, Vec<String>)> {
    let Servers::Named(names) = servers else {
        return Ok((true, Vec::new()));
    };
    let mut ids = Vec::with_capacity(names.len());
    let mut seen = HashSet::new();
    for name in names.iter().filter(|n| seen.insert(n.as_str())) {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM hosts WHERE name = ?1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
        ids.push(id.ok_or_else(|| StoreError::not_found("server", name))?);
    }
    Ok((false, ids))
}

/// Where every service is placed, by service name.
pub(super) async fn service_placements(
    conn: &mut SqliteConnection,
) -> Result<HashMap<String, Placement>> {
    let services: Vec<(String, bool)> = sqlx::query_as("SELECT name, all_servers FROM services")
        .fetch_all(&mut *conn)
        .await?;
    let links: Vec<(String, String)> =
        sqlx::query_as("SELECT service, host_id FROM service_servers")
            .fetch_all(&mut *conn)
            .await?;
    let mut placements: HashMap<String, Placement> = services
        .into_iter()
        .map(|(name, all)| {
            let p = if all {
                Placement::All
            } else {
                Placement::Hosts(HashSet::new())
            };
            (name, p)
        })
        .collect();
    for (service, host) in links {
        if let Some(Placement::Hosts(hosts)) = placements.get_mut(&service) {
            hosts.insert(host);
        }
    }
    Ok(placements)
}

/// A service row as a host's spec needs it: name, protocol, port, image, options, bandwidth
/// down and up, new-connection rate.
type ServiceSpecRaw = (
    String,
    String,
    u16,
    Option<String>,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A stored credential row: `(user id, service, protocol, port, secret)`.
type HeldRow = (String, String, String, u16, String);

fn held(row: HeldRow) -> Result<(String, HeldCredential)> {
    let (user, service, protocol, port, secret) = row;
    let protocol = parse_protocol(&protocol)?;
    Ok((
        user,
        HeldCredential {
            service,
            protocol,
            port,
            secret,
        },
    ))
}

/// Loads credentials with a query returning [`HeldRow`]s bound to `key`, grouped by user.
pub(super) async fn held_where(
    conn: &mut SqliteConnection,
    sql: &str,
    key: &str,
) -> Result<HashMap<String, Vec<HeldCredential>>> {
    let rows: Vec<HeldRow> = sqlx::query_as(sql).bind(key).fetch_all(conn).await?;
    let rows = rows.into_iter().map(held).collect::<Result<Vec<_>>>()?;
    Ok(render::group_held(rows))
}

/// Pushes for one user whose presence changed on every host it is placed on: its fresh spec
/// (`upsert`) or its removal. Bumps those hosts. Work is O(user's hosts × its credentials).
pub(super) async fn push_user(
    conn: &mut SqliteConnection,
    user_id: &str,
    name: &str,
    all: bool,
    upsert: bool,
) -> Result<Vec<HostPush>> {
    let bumped = bump(conn, all, Owner::User(user_id)).await?;
    if !upsert {
        return Ok(render::pushes(bumped, |_| {
            vec![Change::RemoveUser { name: name.into() }]
        }));
    }
    wireguard::ensure(conn, Scope::User(user_id)).await?;
    let user = UserRender::load(conn, user_id, name).await?;
    Ok(render::pushes(bumped, |host| {
        vec![Change::UpsertUser(user.spec(host))]
    }))
}

/// One user loaded for rendering its spec on any host: O(its credentials) to load, then pure.
pub(super) struct UserRender {
    id: String,
    name: String,
    bandwidth: vpn_shared::model::Bandwidth,
    held: Vec<HeldCredential>,
    placements: HashMap<String, Placement>,
    peers: wireguard::Peers,
}

impl UserRender {
    pub(super) async fn load(
        conn: &mut SqliteConnection,
        user_id: &str,
        name: &str,
    ) -> Result<UserRender> {
        let (down, up): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT bandwidth_down, bandwidth_up FROM users WHERE id = ?1")
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::not_found("user", name))?;
        const SQL: &str = "SELECT c.user_id, c.service, s.protocol, COALESCE(c.port, s.port), \
            c.secret FROM credentials c JOIN services s ON s.name = c.service WHERE c.user_id = ?1";
        let mut by_user = held_where(conn, SQL, user_id).await?;
        Ok(UserRender {
            id: user_id.to_owned(),
            name: name.to_owned(),
            bandwidth: bandwidth_from_db(down, up)?,
            held: by_user.remove(user_id).unwrap_or_default(),
            placements: service_placements(conn).await?,
            peers: wireguard::peers(conn, Scope::User(user_id)).await?,
        })
    }

    /// The user's spec on `host`: the credentials of the services placed there.
    pub(super) fn spec(&self, host: &str) -> vpn_shared::model::UserSpec {
        let key = UserKey {
            id: &self.id,
            name: &self.name,
            bandwidth: self.bandwidth,
        };
        let on_host = |s: &str| self.placements.get(s).is_some_and(|p| p.contains(host));
        let per_host = |user: &str, c: &HeldCredential| self.peers.get(user, &c.service, host);
        render::user_spec(&key, &self.held, on_host, &per_host)
    }
}

impl Store {
    /// The full desired state of one host at its current generation: its services, its active
    /// users (each with only the credentials of services on that host) and its firewall policy.
    ///
    /// WireGuard rows the host lacks (it is new, or a service was placed on it) are made first,
    /// in a write of their own; a subnet with no address left leaves those peers out (logged)
    /// instead of refusing the host its whole state.
    pub async fn desired_state(&self, host_id: &str) -> Result<DesiredState> {
        self.ensure_wireguard_of_host(host_id).await?;
        let mut tx = self.read().await?;
        let state = render_host(&mut tx, host_id, None).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Makes the host's missing WireGuard rows (a cheap read when none is missing).
    async fn ensure_wireguard_of_host(&self, host_id: &str) -> Result<()> {
        let mut tx = self.read().await?;
        let missing = wireguard::missing(&mut tx, Scope::Host(host_id)).await?;
        tx.commit().await?;
        if !missing {
            return Ok(());
        }
        let mut w = self.write().await?;
        match wireguard::ensure(&mut w.tx, Scope::Host(host_id)).await {
            Ok(()) => w.commit().await,
            Err(StoreError::Wireguard(e)) => {
                tracing::warn!(host = %host_id, error = %e, "wireguard peers left out of the host's state");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The desired state of one host as `conn` sees it: its services, its active users (each with
/// only the credentials of services on that host) and its firewall policy. With `only`, the
/// users are those of these names alone (a part of the state, for [`super::digest`]).
pub(super) async fn render_host(
    conn: &mut SqliteConnection,
    host_id: &str,
    only: Option<&[String]>,
) -> Result<DesiredState> {
    let generation: Option<u64> = sqlx::query_scalar("SELECT generation FROM hosts WHERE id = ?1")
        .bind(host_id)
        .fetch_optional(&mut *conn)
        .await?;
    let generation = generation.ok_or_else(|| StoreError::not_found("host", host_id))?;

    let rows: Vec<ServiceSpecRaw> = sqlx::query_as(
        "SELECT name, protocol, port, image, options, bandwidth_down, bandwidth_up, \
         new_conn_rate FROM services WHERE all_servers \
         OR name IN (SELECT service FROM service_servers WHERE host_id = ?1)",
    )
    .bind(host_id)
    .fetch_all(&mut *conn)
    .await?;
    let services = rows
        .into_iter()
        .map(|(name, protocol, port, image, options, down, up, rate)| {
            Ok(ServiceSpec {
                name,
                protocol: parse_protocol(&protocol)?,
                port,
                image,
                options: parse_options(&options)?,
                bandwidth: bandwidth_from_db(down, up)?,
                new_conn_rate: conn_rate_from_db(rate)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let only = only
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::corrupt("user names", e))?;
    let on_host = format!(
        "u.status IN {SERVING} AND (u.all_servers \
         OR u.id IN (SELECT user_id FROM user_servers WHERE host_id = ?1)) \
         AND (?2 IS NULL OR u.name IN (SELECT value FROM json_each(?2)))"
    );
    let users: Vec<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT u.id, u.name, u.bandwidth_down, u.bandwidth_up FROM users u WHERE {on_host}"
    ))
    .bind(host_id)
    .bind(&only)
    .fetch_all(&mut *conn)
    .await?;
    let rows: Vec<HeldRow> = sqlx::query_as(&format!(
        "SELECT c.user_id, c.service, s.protocol, COALESCE(c.port, s.port), c.secret \
         FROM credentials c JOIN services s ON s.name = c.service JOIN users u ON u.id = c.user_id \
         WHERE {on_host} AND (s.all_servers \
         OR s.name IN (SELECT service FROM service_servers WHERE host_id = ?1))"
    ))
    .bind(host_id)
    .bind(&only)
    .fetch_all(&mut *conn)
    .await?;
    let rows = rows.into_iter().map(held).collect::<Result<Vec<_>>>()?;
    let mut held = render::group_held(rows);
    let firewall = firewall::host_specs(conn, Some(&[host_id.to_owned()])).await?;
    let peers = wireguard::peers(conn, Scope::Host(host_id)).await?;
    let interfaces = wireguard::interfaces(conn, Scope::Host(host_id)).await?;
    let services = services
        .iter()
        .map(|s| interfaces.host_spec(s, host_id))
        .collect();
    let per_host = |user: &str, c: &HeldCredential| peers.get(user, &c.service, host_id);

    let users: Vec<ActiveUser> = users
        .into_iter()
        .map(|(id, name, down, up)| {
            Ok(ActiveUser {
                held: held.remove(&id).unwrap_or_default(),
                bandwidth: bandwidth_from_db(down, up)?,
                id,
                name,
            })
        })
        .collect::<Result<_>>()?;
    let firewall = firewall.into_values().next().unwrap_or_default();
    Ok(render::desired_state(
        generation, services, &users, firewall, &per_host,
    ))
}
