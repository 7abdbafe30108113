//! Services: deploying one gives every allowed user a credential (a port and a secret) and tells
//! its hosts about the service and those users' new specs; removing one tells its hosts to drop
//! it, and the users' credentials for it go with it; editing its caps sends its hosts the new spec.

use std::collections::{HashMap, HashSet};

use sqlx::SqliteConnection;
use vpn_shared::model::Change;

use super::error::{Result, StoreError};
use vpn_shared::model::Bandwidth;

use super::render::{self, HeldCredential, Placement, UserKey};
use super::rows::{
    DEFAULT_PORT_SPAN, NewService, SHARED_PORT_SPAN, ServiceRow, bandwidth_from_db,
    conn_rate_from_db, parse_options, parse_protocol, parse_protocols, rate_to_db, servers,
};
use super::state::{self, Owner};
use super::wireguard::{self, Scope};
use super::{Mutation, Store, ports, validate};

/// A `services` row before its explicit server names are attached.
type ServiceRaw = (
    String,
    String,
    u16,
    u16,
    Option<String>,
    String,
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
);

const SERVICE_COLUMNS: &str = "name, protocol, port, port_span, image, options, all_servers, \
    bandwidth_down, bandwidth_up, new_conn_rate, created_at";

/// Loads services (all, or the one named) with their explicit server names.
pub(super) async fn load_services(
    conn: &mut SqliteConnection,
    name: Option<&str>,
) -> Result<Vec<ServiceRow>> {
    // `?1 IS NULL` selects every service; there are few, so no index is missed.
    let sql = format!(
        "SELECT {SERVICE_COLUMNS} FROM services WHERE ?1 IS NULL OR name = ?1 ORDER BY name"
    );
    let raw: Vec<ServiceRaw> = sqlx::query_as(&sql)
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
    let sql = "SELECT ss.service, h.name FROM service_servers ss JOIN hosts h ON h.id = ss.host_id \
         WHERE ?1 IS NULL OR ss.service = ?1 ORDER BY h.name";
    let links: Vec<(String, String)> = sqlx::query_as(sql).bind(name).fetch_all(conn).await?;
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    for (service, host) in links {
        names.entry(service).or_default().push(host);
    }
    raw.into_iter()
        .map(|raw| {
            let (name, protocol, port, port_span, image, options, all, down, up, rate, created) =
                raw;
            Ok(ServiceRow {
                protocol: parse_protocol(&protocol)?,
                options: parse_options(&options)?,
                servers: servers(all, names.remove(&name).unwrap_or_default()),
                bandwidth: bandwidth_from_db(down, up)?,
                new_conn_rate: conn_rate_from_db(rate)?,
                name,
                port,
                port_span,
                image,
                created_at: created,
            })
        })
        .collect()
}

impl Store {
    /// Deploys a new service on its servers and gives every user whose protocols allow it a
    /// credential. Its hosts get the service and the updated specs of their active users.
    pub async fn deploy_service(&self, new: NewService, now: i64) -> Result<Mutation<ServiceRow>> {
        validate::service_name(&new.name)?;
        let (span, span_field) = span_of(&new)?;
        validate::port_range(new.port, span, span_field)?;
        validate::image(new.image.as_deref())?;
        validate::options(new.protocol, &new.options)?;
        validate::bandwidth(&new.bandwidth)?;
        validate::new_conn_rate(new.new_conn_rate)?;
        let options = serde_json::to_string(&new.options)
            .map_err(|e| StoreError::invalid("options", e.to_string()))?;

        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        if !load_services(conn, Some(&new.name)).await?.is_empty() {
            return Err(StoreError::Duplicate {
                what: "service",
                name: new.name,
            });
        }
        check_overlap(conn, None, new.port, span, span_field).await?;
        wireguard::check_subnets(conn, &new.name, &new.options).await?;
        let (all, host_ids) = state::resolve_servers(conn, &new.servers).await?;
        sqlx::query(
            "INSERT INTO services (name, protocol, port, port_span, next_port, image, options, \
             all_servers, bandwidth_down, bandwidth_up, new_conn_rate, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(&new.name)
        .bind(new.protocol.as_str())
        .bind(new.port)
        .bind(span)
        .bind(&new.image)
        .bind(&options)
        .bind(all)
        .bind(rate_to_db(new.bandwidth.down_bps)?)
        .bind(rate_to_db(new.bandwidth.up_bps)?)
        .bind(new.new_conn_rate)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        for host in &host_ids {
            sqlx::query("INSERT INTO service_servers (service, host_id) VALUES (?1, ?2)")
                .bind(&new.name)
                .bind(host)
                .execute(&mut *conn)
                .await?;
        }
        self.issue_credentials(conn, &new).await?;

        let service = load_services(conn, Some(&new.name)).await?.pop();
        let service = service.ok_or_else(|| StoreError::not_found("service", &new.name))?;
        let mut pushes = deploy_pushes(conn, &service, all).await?;
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: service,
            pushes,
        })
    }

    /// Gives every user allowed the service's protocol a secret and, where the engine listens
    /// per user, a port of their own, in name order.
    async fn issue_credentials(&self, conn: &mut SqliteConnection, new: &NewService) -> Result<()> {
        let users: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT id, protocols FROM users ORDER BY name")
                .fetch_all(&mut *conn)
                .await?;
        let mut allowed = Vec::with_capacity(users.len());
        for (id, protocols) in users {
            if parse_protocols(protocols.as_deref())?.is_none_or(|p| p.contains(&new.protocol)) {
                allowed.push(id);
            }
        }
        let own_ports: Vec<Option<u16>> = if new.options.port_per_user() {
            let ports = ports::allocate(conn, &new.name, allowed.len()).await?;
            ports.into_iter().map(Some).collect()
        } else {
            vec![None; allowed.len()]
        };
        let creds = allowed
            .into_iter()
            .zip(own_ports)
            .map(|(id, port)| Ok((id, port, ports::secret(&self.rng, new.protocol)?)))
            .collect::<Result<Vec<_>>>()?;
        ports::insert_credentials(conn, &new.name, &creds).await
    }

    /// Every service, by name.
    pub async fn services(&self) -> Result<Vec<ServiceRow>> {
        let mut tx = self.read().await?;
        let services = load_services(&mut tx, None).await?;
        tx.commit().await?;
        Ok(services)
    }

    /// One service by name.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceRow>> {
        let mut tx = self.read().await?;
        let service = load_services(&mut tx, Some(name)).await?.pop();
        tx.commit().await?;
        Ok(service)
    }

    /// Changes a service's caps: `bandwidth` replaces the whole cap (`Bandwidth::default()`
    /// removes it), `new_conn_rate` `Some(None)` removes the rate limit; `None` leaves either as
    /// it is. Its hosts get the new spec; an edit that changes nothing pushes nothing.
    pub async fn edit_service(
        &self,
        name: &str,
        bandwidth: Option<Bandwidth>,
        new_conn_rate: Option<Option<u32>>,
    ) -> Result<Mutation<ServiceRow>> {
        self.edit_service_with(name, bandwidth, new_conn_rate, None)
            .await
    }

    /// Like [`edit_service`](Self::edit_service), also changing the image: `Some(Some(i))` runs
    /// `i`, `Some(None)` the driver's default. A new image changes the container's spec, so
    /// each host replaces the container (make-before-break: a replacement that cannot be
    /// created leaves the old one serving, and the host reports the failure).
    pub async fn edit_service_with(
        &self,
        name: &str,
        bandwidth: Option<Bandwidth>,
        new_conn_rate: Option<Option<u32>>,
        image: Option<Option<String>>,
    ) -> Result<Mutation<ServiceRow>> {
        self.edit_service_ports(name, bandwidth, new_conn_rate, image, None)
            .await
    }

    /// Like [`edit_service_with`](Self::edit_service_with), also resizing the port range to
    /// `ports` ports from the first, which never moves (users hold ports from it). Growing is
    /// always safe; shrinking is refused while a user holds a port past the new end. A new size
    /// alone pushes nothing: hosts open the ports users hold, never the range. Everything is
    /// one transaction: a refused part writes nothing.
    pub async fn edit_service_ports(
        &self,
        name: &str,
        bandwidth: Option<Bandwidth>,
        new_conn_rate: Option<Option<u32>>,
        image: Option<Option<String>>,
        ports: Option<u16>,
    ) -> Result<Mutation<ServiceRow>> {
        if let Some(i) = &image {
            validate::image(i.as_deref())?;
        }
        if let Some(b) = &bandwidth {
            validate::bandwidth(b)?;
        }
        if let Some(rate) = new_conn_rate {
            validate::new_conn_rate(rate)?;
        }
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let service = load_services(conn, Some(name)).await?.pop();
        let mut service = service.ok_or_else(|| StoreError::not_found("service", name))?;
        if let Some(span) = ports.filter(|span| *span != service.port_span) {
            resize(conn, &service, span).await?;
            service.port_span = span;
        }
        let bandwidth = bandwidth.unwrap_or(service.bandwidth);
        let new_conn_rate = new_conn_rate.unwrap_or(service.new_conn_rate);
        let image = image.unwrap_or_else(|| service.image.clone());
        if bandwidth == service.bandwidth
            && new_conn_rate == service.new_conn_rate
            && image == service.image
        {
            w.commit().await?;
            return Ok(Mutation {
                value: service,
                pushes: Vec::new(),
            });
        }
        sqlx::query(
            "UPDATE services SET bandwidth_down = ?1, bandwidth_up = ?2, new_conn_rate = ?3, \
             image = ?4 WHERE name = ?5",
        )
        .bind(rate_to_db(bandwidth.down_bps)?)
        .bind(rate_to_db(bandwidth.up_bps)?)
        .bind(new_conn_rate)
        .bind(&image)
        .bind(name)
        .execute(&mut *conn)
        .await?;
        let all = matches!(service.servers, super::Servers::All);
        let bumped = state::bump(conn, all, Owner::Service(name)).await?;
        let interfaces = wireguard::interfaces(conn, Scope::Service(name)).await?;
        let service = ServiceRow {
            bandwidth,
            new_conn_rate,
            image,
            ..service
        };
        let spec = service.spec();
        let mut pushes = render::pushes(bumped, |host| {
            vec![Change::UpsertService(interfaces.host_spec(&spec, host))]
        });
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: service,
            pushes,
        })
    }

    /// Removes a service and every credential for it; its hosts are told to drop it (which also
    /// drops those credentials from their users). The ports return to nobody: the range goes too.
    pub async fn remove_service(&self, name: &str) -> Result<Mutation<ServiceRow>> {
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let service = load_services(conn, Some(name)).await?.pop();
        let service = service.ok_or_else(|| StoreError::not_found("service", name))?;
        let all = matches!(service.servers, super::Servers::All);
        let bumped = state::bump(conn, all, Owner::Service(name)).await?;
        // Credentials first, while the service row still exists, then the ports the trigger
        // listed as free, then the service itself.
        for sql in [
            "DELETE FROM credentials WHERE service = ?1",
            "DELETE FROM free_ports WHERE service = ?1",
            "DELETE FROM services WHERE name = ?1",
        ] {
            sqlx::query(sql).bind(name).execute(&mut *conn).await?;
        }
        let mut pushes = render::pushes(bumped, |_| {
            vec![Change::RemoveService { name: name.into() }]
        });
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: service,
            pushes,
        })
    }
}

/// The span of a new service and the field to blame if its range does not fit: the operator's
/// `--ports`, or else the default (a range for a port per user, the port alone otherwise).
fn span_of(new: &NewService) -> Result<(u16, &'static str)> {
    let per_user = new.options.port_per_user();
    match new.port_span {
        Some(span) if !per_user && span != SHARED_PORT_SPAN => Err(StoreError::invalid(
            "ports",
            format!(
                "the users of a {} service share its one port; a range of ports is for services \
                 with a port per user (shadowsocks, proxy, vless on shoes)",
                new.protocol
            ),
        )),
        Some(span) => Ok((span, "ports")),
        None if per_user => Ok((DEFAULT_PORT_SPAN, "port")),
        None => Ok((SHARED_PORT_SPAN, "port")),
    }
}

/// Refuses a port range that overlaps another service's (on any host: a service placed on
/// other hosts today may be placed on every host tomorrow). `except` skips the service itself
/// when its range is resized; `field` is the flag the error names.
async fn check_overlap(
    conn: &mut SqliteConnection,
    except: Option<&str>,
    port: u16,
    span: u16,
    field: &'static str,
) -> Result<()> {
    let last = u32::from(port) + u32::from(span) - 1;
    let other: Option<(String, u32, u32)> = sqlx::query_as(
        "SELECT name, port, port + port_span - 1 FROM services \
         WHERE port <= ?2 AND port + port_span - 1 >= ?1 AND (?3 IS NULL OR name <> ?3) \
         ORDER BY port LIMIT 1",
    )
    .bind(port)
    .bind(last)
    .bind(except)
    .fetch_optional(conn)
    .await?;
    match other {
        Some((name, first, end)) => Err(StoreError::invalid(
            field,
            format!("ports {port}-{last} overlap service {name} ({first}-{end})"),
        )),
        None => Ok(()),
    }
}

/// Gives `service` (a port per user) a range of `span` ports from its first port, checked
/// against 65535 and the other services' ranges.
async fn resize(conn: &mut SqliteConnection, service: &ServiceRow, span: u16) -> Result<()> {
    let name = service.name.as_str();
    if !service.options.port_per_user() {
        return Err(StoreError::invalid(
            "ports",
            format!(
                "the users of service {name} ({}) share its one port {}; a range of ports is for \
                 services with a port per user",
                service.protocol, service.port
            ),
        ));
    }
    validate::port_range(service.port, span, "ports")?;
    check_overlap(conn, Some(name), service.port, span, "ports").await?;
    ports::resize(conn, name, service.port, span).await?;
    tracing::info!(
        service = name,
        first = service.port,
        from = service.port_span,
        to = span,
        "service port range resized"
    );
    Ok(())
}

/// A holder's `users` row: id, name, all servers, bandwidth down and up.
type HolderRaw = (String, String, bool, Option<i64>, Option<i64>);

/// An active user that just got a credential for a deployed service.
struct Holder {
    id: String,
    name: String,
    bandwidth: Bandwidth,
    placement: Placement,
    creds: Vec<HeldCredential>,
}

/// The pushes of a deploy: bumps the service's hosts and sends each the service plus the fresh
/// spec of every active user placed there that just got a credential for it.
async fn deploy_pushes(
    conn: &mut SqliteConnection,
    service: &ServiceRow,
    all: bool,
) -> Result<Vec<super::HostPush>> {
    let bumped = state::bump(conn, all, Owner::Service(&service.name)).await?;
    let holding = format!(
        "u.status IN {} AND u.id IN (SELECT user_id FROM credentials WHERE service = ?1)",
        super::rows::SERVING
    );
    let users: Vec<HolderRaw> = sqlx::query_as(&format!(
        "SELECT u.id, u.name, u.all_servers, u.bandwidth_down, u.bandwidth_up FROM users u \
         WHERE {holding} ORDER BY u.name"
    ))
    .bind(&service.name)
    .fetch_all(&mut *conn)
    .await?;
    let links: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT us.user_id, us.host_id FROM user_servers us JOIN users u ON u.id = us.user_id \
         WHERE {holding}"
    ))
    .bind(&service.name)
    .fetch_all(&mut *conn)
    .await?;
    let mut explicit: HashMap<String, HashSet<String>> = HashMap::new();
    for (user, host) in links {
        explicit.entry(user).or_default().insert(host);
    }
    let sql = format!(
        "SELECT c.user_id, c.service, s.protocol, COALESCE(c.port, s.port), c.secret FROM credentials c \
         JOIN services s ON s.name = c.service JOIN users u ON u.id = c.user_id WHERE {holding}"
    );
    let mut held = state::held_where(conn, &sql, &service.name).await?;
    let placements = state::service_placements(conn).await?;
    wireguard::ensure(conn, Scope::Service(&service.name)).await?;
    let peers = wireguard::peers(conn, Scope::Service(&service.name)).await?;
    let interfaces = wireguard::interfaces(conn, Scope::Service(&service.name)).await?;

    let holders: Vec<Holder> = users
        .into_iter()
        .map(|(id, name, all, down, up)| {
            let placement = if all {
                Placement::All
            } else {
                Placement::Hosts(explicit.remove(&id).unwrap_or_default())
            };
            Ok(Holder {
                creds: held.remove(&id).unwrap_or_default(),
                bandwidth: bandwidth_from_db(down, up)?,
                id,
                name,
                placement,
            })
        })
        .collect::<Result<_>>()?;
    let spec = service.spec();
    // A host where the deploy rewrites more users than a full state is worth gets the full
    // state (`digest.rs`): its users are not rendered here at all.
    let whole: HashSet<String> = bumped
        .iter()
        .map(|(host, _)| host)
        .filter(|host| {
            let on = holders
                .iter()
                .filter(|h| h.placement.contains(host))
                .count();
            on + 1 > super::digest::FULL_STATE_ABOVE
        })
        .cloned()
        .collect();
    let mut pushes = render::pushes(bumped, |host| {
        if whole.contains(host) {
            return Vec::new();
        }
        let on_host = |s: &str| placements.get(s).is_some_and(|p| p.contains(host));
        let per_host = |user: &str, c: &HeldCredential| peers.get(user, &c.service, host);
        let mut changes = vec![Change::UpsertService(interfaces.host_spec(&spec, host))];
        for h in holders.iter().filter(|h| h.placement.contains(host)) {
            let key = UserKey {
                id: &h.id,
                name: &h.name,
                bandwidth: h.bandwidth,
            };
            changes.push(Change::UpsertUser(render::user_spec(
                &key, &h.creds, on_host, &per_host,
            )));
        }
        changes
    });
    for p in pushes.iter_mut().filter(|p| whole.contains(&p.host_id)) {
        p.full = true;
    }
    Ok(pushes)
}
