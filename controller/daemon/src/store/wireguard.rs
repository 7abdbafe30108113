//! WireGuard's per-host rows: one interface key per (service, host), one peer per (user,
//! service, host) with its own keys and tunnel address (SPEC §2.4: per user *per server*).
//!
//! Rows are made on demand, inside the transaction that needs them: a user added or changed
//! ([`Scope::User`]), a service deployed ([`Scope::Service`]), a host's full state
//! ([`Scope::Host`], which covers hosts added later and services placed on them). They go only
//! with what they belong to (the credential, i.e. the user or the user's protocol, the service,
//! the host) through foreign keys, so an address is never reused while held and is free again
//! once its peer is gone. Suspended users keep theirs.
//!
//! Addresses come from the pure [`Allocator`] of `vpn_shared::wireguard`: the lowest free index
//! of the subnet on that host, the server holding index 1.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};
use vpn_shared::model::{Credential, ServiceOptions, ServiceSpec, WireguardOptions};
use vpn_shared::wireguard::{self as wg, Allocator, Subnet, WireguardError};

use super::error::{Result, StoreError};
use super::rows::parse_options;
use super::{Store, StoreError as E};

/// Which rows a call makes or loads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope<'a> {
    /// One user (by id), on every host it and a WireGuard service share.
    User(&'a str),
    /// One service, on every host it is placed on.
    Service(&'a str),
    /// One host (by id), for every WireGuard service placed there.
    Host(&'a str),
}

/// Rows per multi-row `INSERT` (7 parameters each).
const INSERT_CHUNK: usize = 200;

/// Whether any WireGuard service exists: everything here is skipped when none does.
async fn any_service(conn: &mut SqliteConnection) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM services WHERE protocol = 'wireguard')")
            .fetch_one(conn)
            .await?,
    )
}

/// `(service, host)` pairs of WireGuard services placed on hosts, for the scope's filter.
const PLACED: &str = "FROM services s JOIN hosts h ON (s.all_servers OR EXISTS \
    (SELECT 1 FROM service_servers ss WHERE ss.service = s.name AND ss.host_id = h.id)) \
    WHERE s.protocol = 'wireguard'";

/// Credentials of WireGuard services with the hosts where both the user and the service are.
const PEER_PAIRS: &str = "FROM credentials c JOIN services s ON s.name = c.service \
    JOIN users u ON u.id = c.user_id \
    JOIN hosts h ON (s.all_servers OR EXISTS \
        (SELECT 1 FROM service_servers ss WHERE ss.service = s.name AND ss.host_id = h.id)) \
     AND (u.all_servers OR EXISTS \
        (SELECT 1 FROM user_servers us WHERE us.user_id = u.id AND us.host_id = h.id)) \
    WHERE s.protocol = 'wireguard'";

fn interface_filter(scope: Scope<'_>) -> &'static str {
    match scope {
        Scope::User(_) => "AND ?1 IS NOT NULL",
        Scope::Service(_) => "AND s.name = ?1",
        Scope::Host(_) => "AND h.id = ?1",
    }
}

fn peer_filter(scope: Scope<'_>) -> &'static str {
    match scope {
        Scope::User(_) => "AND c.user_id = ?1",
        Scope::Service(_) => "AND c.service = ?1",
        Scope::Host(_) => "AND h.id = ?1",
    }
}

fn key(scope: Scope<'_>) -> &str {
    match scope {
        Scope::User(k) | Scope::Service(k) | Scope::Host(k) => k,
    }
}

/// Whether the scope lacks an interface or a peer row.
pub(super) async fn missing(conn: &mut SqliteConnection, scope: Scope<'_>) -> Result<bool> {
    if !any_service(conn).await? {
        return Ok(false);
    }
    let sql = format!(
        "SELECT EXISTS (SELECT 1 {PLACED} {} AND NOT EXISTS (SELECT 1 FROM wg_interfaces i \
         WHERE i.service = s.name AND i.host_id = h.id)) OR EXISTS (SELECT 1 {PEER_PAIRS} {} \
         AND NOT EXISTS (SELECT 1 FROM wg_peers p WHERE p.user_id = c.user_id \
         AND p.service = c.service AND p.host_id = h.id))",
        interface_filter(scope),
        peer_filter(scope)
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(key(scope))
        .fetch_one(conn)
        .await?)
}

/// Makes the interface and peer rows the scope lacks. Exhaustion of a subnet is an error naming
/// the service and the subnet, and nothing of the transaction is kept.
pub(super) async fn ensure(conn: &mut SqliteConnection, scope: Scope<'_>) -> Result<()> {
    if !any_service(conn).await? {
        return Ok(());
    }
    let sql = format!(
        "SELECT s.name, h.id {PLACED} {} AND NOT EXISTS (SELECT 1 FROM wg_interfaces i \
         WHERE i.service = s.name AND i.host_id = h.id)",
        interface_filter(scope)
    );
    let interfaces: Vec<(String, String)> = sqlx::query_as(&sql)
        .bind(key(scope))
        .fetch_all(&mut *conn)
        .await?;
    for (service, host) in interfaces {
        let pair = wg::generate_key_pair()?;
        sqlx::query(
            "INSERT INTO wg_interfaces (service, host_id, private_key, public_key) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(&service)
        .bind(&host)
        .bind(&pair.private_key)
        .bind(&pair.public_key)
        .execute(&mut *conn)
        .await?;
    }

    let sql = format!(
        "SELECT c.user_id, c.service, h.id {PEER_PAIRS} {} AND NOT EXISTS \
         (SELECT 1 FROM wg_peers p WHERE p.user_id = c.user_id AND p.service = c.service \
         AND p.host_id = h.id) ORDER BY c.service, h.id, u.name",
        peer_filter(scope)
    );
    let missing: Vec<(String, String, String)> = sqlx::query_as(&sql)
        .bind(key(scope))
        .fetch_all(&mut *conn)
        .await?;
    let mut groups: Vec<((String, String), Vec<String>)> = Vec::new();
    for (user, service, host) in missing {
        match groups.last_mut() {
            Some((k, users)) if k.0 == service && k.1 == host => users.push(user),
            _ => groups.push(((service, host), vec![user])),
        }
    }
    for ((service, host), users) in groups {
        add_peers(conn, &service, &host, &users).await?;
    }
    Ok(())
}

/// Allocates and inserts peers of `users` on one service and host.
async fn add_peers(
    conn: &mut SqliteConnection,
    service: &str,
    host: &str,
    users: &[String],
) -> Result<()> {
    let options: String = sqlx::query_scalar("SELECT options FROM services WHERE name = ?1")
        .bind(service)
        .fetch_one(&mut *conn)
        .await?;
    let (subnet, v6) = subnets(service, &parse_options(&options)?)?;
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT address_index FROM wg_peers WHERE service = ?1 AND host_id = ?2",
    )
    .bind(service)
    .bind(host)
    .fetch_all(&mut *conn)
    .await?;
    let held = held.into_iter().filter_map(|i| u128::try_from(i).ok());
    let mut allocator = Allocator::new(service, subnet, held);
    let mut rows = Vec::with_capacity(users.len());
    for user in users {
        let index = allocator.allocate()?;
        // Checks the IPv6 subnet holds the same index before anything is written.
        wg::peer_addresses(service, &subnet, v6.as_ref(), index)?;
        let pair = wg::generate_key_pair()?;
        let psk = wg::generate_preshared_key()?;
        let index = i64::try_from(index).map_err(|_| WireguardError::Exhausted {
            service: service.to_owned(),
            subnet: subnet.to_string(),
        })?;
        rows.push((user, index, pair, psk));
    }
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO wg_peers (user_id, service, host_id, address_index, private_key, \
             public_key, preshared_key) ",
        );
        q.push_values(chunk, |mut row, (user, index, pair, psk)| {
            row.push_bind(*user)
                .push_bind(service)
                .push_bind(host)
                .push_bind(*index)
                .push_bind(&pair.private_key)
                .push_bind(&pair.public_key)
                .push_bind(psk);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// A WireGuard service's subnets, parsed.
pub(crate) fn subnets(
    service: &str,
    options: &ServiceOptions,
) -> Result<(Subnet, Option<Subnet>), StoreError> {
    let ServiceOptions::Wireguard(o) = options else {
        return Err(StoreError::corrupt(
            "service options",
            format!("service {service} is not a wireguard service"),
        ));
    };
    let subnet = Subnet::parse(&o.subnet)?;
    let v6 = o.ipv6_subnet.as_deref().map(Subnet::parse).transpose()?;
    Ok((subnet, v6))
}

/// Refuses a WireGuard service whose subnets overlap another WireGuard service's: both would
/// route the same addresses to different interfaces of a host.
pub(super) async fn check_subnets(
    conn: &mut SqliteConnection,
    name: &str,
    options: &ServiceOptions,
) -> Result<()> {
    if !matches!(options, ServiceOptions::Wireguard(_)) {
        return Ok(());
    }
    let (v4, v6) = subnets(name, options)?;
    let others: Vec<(String, String)> =
        sqlx::query_as("SELECT name, options FROM services WHERE protocol = 'wireguard'")
            .fetch_all(conn)
            .await?;
    for (other, raw) in others {
        let (o4, o6) = subnets(&other, &parse_options(&raw)?)?;
        let mine = std::iter::once(v4).chain(v6);
        let theirs: Vec<Subnet> = std::iter::once(o4).chain(o6).collect();
        for s in mine {
            if let Some(t) = theirs.iter().find(|t| overlap(&s, t)) {
                let field = if s.is_ipv4() { "subnet" } else { "ipv6-subnet" };
                return Err(StoreError::invalid(
                    field,
                    format!("{s} overlaps {t} of wireguard service {other}"),
                ));
            }
        }
    }
    Ok(())
}

/// Two subnets overlap when one holds the other's network address.
fn overlap(a: &Subnet, b: &Subnet) -> bool {
    let net = |s: &Subnet| s.nth(0);
    net(b).is_some_and(|n| a.index_of(n).is_some())
        || net(a).is_some_and(|n| b.index_of(n).is_some())
}

/// A peer's allowed IPs (host routes) from its index.
fn allowed_ips(service: &str, options: &ServiceOptions, index: i64) -> Result<Vec<String>> {
    let (subnet, v6) = subnets(service, options)?;
    let index = u128::try_from(index)
        .map_err(|_| StoreError::corrupt("wireguard peer", format!("address index {index}")))?;
    Ok(wg::peer_addresses(service, &subnet, v6.as_ref(), index)?
        .into_iter()
        .map(Subnet::host_route)
        .collect())
}

/// The scope's peers as the hosts' credentials, by (user id, service, host id).
#[derive(Debug, Default)]
pub(super) struct Peers(HashMap<(String, String, String), Credential>);

impl Peers {
    pub(super) fn get(&self, user: &str, service: &str, host: &str) -> Option<Credential> {
        self.0
            .get(&(user.to_owned(), service.to_owned(), host.to_owned()))
            .cloned()
    }
}

/// Loads the scope's peers.
pub(super) async fn peers(conn: &mut SqliteConnection, scope: Scope<'_>) -> Result<Peers> {
    if !any_service(conn).await? {
        return Ok(Peers::default());
    }
    let filter = match scope {
        Scope::User(_) => "p.user_id = ?1",
        Scope::Service(_) => "p.service = ?1",
        Scope::Host(_) => "p.host_id = ?1",
    };
    let sql = format!(
        "SELECT p.user_id, p.service, p.host_id, p.address_index, p.public_key, \
         p.preshared_key, s.port, s.options FROM wg_peers p JOIN services s ON s.name = p.service \
         WHERE {filter}"
    );
    type Row = (String, String, String, i64, String, String, u16, String);
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(key(scope))
        .fetch_all(&mut *conn)
        .await?;
    let mut options: HashMap<String, ServiceOptions> = HashMap::new();
    let mut out = HashMap::with_capacity(rows.len());
    for (user, service, host, index, public_key, preshared_key, port, raw) in rows {
        if !options.contains_key(&service) {
            options.insert(service.clone(), parse_options(&raw)?);
        }
        let Some(o) = options.get(&service) else {
            continue;
        };
        let credential = Credential::Wireguard {
            service: service.clone(),
            port,
            public_key,
            preshared_key,
            allowed_ips: allowed_ips(&service, o, index)?,
        };
        out.insert((user, service, host), credential);
    }
    Ok(Peers(out))
}

/// Interface private keys by (service, host id).
#[derive(Debug, Default)]
pub(super) struct Interfaces(HashMap<(String, String), String>);

impl Interfaces {
    /// `spec` as `host` runs it: a WireGuard service carries that host's interface key (none
    /// yet: empty, and the host reports the service failing until its next full state).
    pub(super) fn host_spec(&self, spec: &ServiceSpec, host: &str) -> ServiceSpec {
        let mut spec = spec.clone();
        if let ServiceOptions::Wireguard(WireguardOptions { private_key, .. }) = &mut spec.options
            && let Some(k) = self.0.get(&(spec.name.clone(), host.to_owned()))
        {
            private_key.clone_from(k);
        }
        spec
    }
}

/// Loads the interface keys of one service (every host) or one host (every service).
pub(super) async fn interfaces(
    conn: &mut SqliteConnection,
    scope: Scope<'_>,
) -> Result<Interfaces> {
    let filter = match scope {
        Scope::Service(_) => "service = ?1",
        Scope::Host(_) => "host_id = ?1",
        Scope::User(_) => "?1 IS NOT NULL",
    };
    let sql = format!("SELECT service, host_id, private_key FROM wg_interfaces WHERE {filter}");
    let rows: Vec<(String, String, String)> = sqlx::query_as(&sql)
        .bind(key(scope))
        .fetch_all(conn)
        .await?;
    Ok(Interfaces(
        rows.into_iter().map(|(s, h, k)| ((s, h), k)).collect(),
    ))
}

/// What a client's `.conf` needs from the store, besides the host's address.
#[derive(Clone, PartialEq, Eq)]
pub struct WireguardClient {
    pub private_key: String,
    pub preshared_key: String,
    /// Host routes of the client's tunnel addresses.
    pub addresses: Vec<String>,
    pub server_public_key: String,
    pub port: u16,
    pub dns: Vec<String>,
    pub mtu: Option<u16>,
}

impl std::fmt::Debug for WireguardClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireguardClient")
            .field("addresses", &self.addresses)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The client side of a user's peer on one service and host, made first if missing (so a
    /// `.conf` can be printed while the host is offline). `None` when the user holds no
    /// credential for the service or the two are not placed on that host.
    pub async fn wireguard_client(
        &self,
        user_id: &str,
        service: &str,
        host_id: &str,
    ) -> Result<Option<WireguardClient>> {
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        ensure(conn, Scope::User(user_id)).await?;
        type Row = (String, String, i64, String, u16, String);
        let row: Option<Row> = sqlx::query_as(
            "SELECT p.private_key, p.preshared_key, p.address_index, i.public_key, s.port, \
             s.options FROM wg_peers p JOIN wg_interfaces i ON i.service = p.service \
             AND i.host_id = p.host_id JOIN services s ON s.name = p.service \
             WHERE p.user_id = ?1 AND p.service = ?2 AND p.host_id = ?3",
        )
        .bind(user_id)
        .bind(service)
        .bind(host_id)
        .fetch_optional(&mut *conn)
        .await?;
        w.commit().await?;
        let Some((private_key, preshared_key, index, server_public_key, port, options)) = row
        else {
            return Ok(None);
        };
        let options = parse_options(&options)?;
        let addresses = allowed_ips(service, &options, index)?;
        let ServiceOptions::Wireguard(o) = options else {
            return Err(E::corrupt("service options", format!("service {service}")));
        };
        Ok(Some(WireguardClient {
            private_key,
            preshared_key,
            addresses,
            server_public_key,
            port,
            dns: o.dns,
            mtu: o.mtu,
        }))
    }

    /// The tunnel addresses (host routes) each user holds on one service and host, by user
    /// name: what operators and tests check for uniqueness.
    pub async fn wireguard_addresses(
        &self,
        service: &str,
        host_id: &str,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let mut tx = self.read().await?;
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT u.name, p.address_index, s.options FROM wg_peers p \
             JOIN users u ON u.id = p.user_id JOIN services s ON s.name = p.service \
             WHERE p.service = ?1 AND p.host_id = ?2 ORDER BY p.address_index",
        )
        .bind(service)
        .bind(host_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(name, index, options)| {
                Ok((
                    name,
                    allowed_ips(service, &parse_options(&options)?, index)?,
                ))
            })
            .collect()
    }
}
