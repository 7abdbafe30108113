//! Per-user ports and secrets for credentials.
//!
//! A service hands out ports from `port ..= port + port_span - 1`, always the lowest free one, and
//! never one that another user holds. To find the lowest free port without scanning every held
//! one, a service keeps a high-water mark (`next_port`: everything at or above it is free) and a
//! list of ports given back below it (`free_ports`, filled by a trigger whenever a credential is
//! deleted). The lowest free port is then the smallest listed one, or else the mark.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use vpn_shared::model::Protocol;

use super::error::{Result, StoreError};

/// Bytes of randomness in a credential secret.
const SECRET_BYTES: usize = 16;

/// Rows per multi-row `INSERT` (4 parameters each, well under SQLite's parameter limit).
const INSERT_CHUNK: usize = 500;

/// Takes the `count` lowest free ports of `service`, in ascending order.
pub(super) async fn allocate(
    conn: &mut SqliteConnection,
    service: &str,
    count: usize,
) -> Result<Vec<u16>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(count).unwrap_or(i64::MAX);
    let mut ports: Vec<u16> = sqlx::query_scalar(
        "DELETE FROM free_ports WHERE service = ?1 AND port IN \
         (SELECT port FROM free_ports WHERE service = ?1 ORDER BY port LIMIT ?2) RETURNING port",
    )
    .bind(service)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    ports.sort_unstable();

    let missing = count - ports.len();
    if missing > 0 {
        let (first, span, next): (u32, u32, u32) =
            sqlx::query_as("SELECT port, port_span, next_port FROM services WHERE name = ?1")
                .bind(service)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| StoreError::not_found("service", service))?;
        let end = first + span; // one past the last port of the range
        let wanted = u32::try_from(missing).unwrap_or(u32::MAX);
        if next.saturating_add(wanted) > end {
            // The range was validated to end at 65535 or below, so these fit.
            return Err(StoreError::PortsExhausted {
                service: service.to_owned(),
                first: u16::try_from(first).unwrap_or(u16::MAX),
                last: u16::try_from(end - 1).unwrap_or(u16::MAX),
            });
        }
        sqlx::query("UPDATE services SET next_port = ?1 WHERE name = ?2")
            .bind(next + wanted)
            .bind(service)
            .execute(&mut *conn)
            .await?;
        // The range was validated to end at 65535 or below, so these fit.
        ports.extend((next..next + wanted).filter_map(|p| u16::try_from(p).ok()));
    }
    Ok(ports)
}

/// Makes `service`'s range `first ..= first + span - 1`. Refused (naming `ports`) while a user
/// holds a port past the new end; otherwise ports past it leave the free list and the
/// high-water mark, so they are never handed out.
pub(super) async fn resize(
    conn: &mut SqliteConnection,
    service: &str,
    first: u16,
    span: u16,
) -> Result<()> {
    let end = u32::from(first) + u32::from(span); // one past the last port of the range
    let held: Option<u32> =
        sqlx::query_scalar("SELECT MAX(port) FROM credentials WHERE service = ?1")
            .bind(service)
            .fetch_one(&mut *conn)
            .await?;
    if let Some(top) = held.filter(|top| *top >= end) {
        let needed = top - u32::from(first) + 1;
        return Err(StoreError::invalid(
            "ports",
            format!(
                "a user of service {service} holds port {top}, past {}; the range must keep at \
                 least {needed} ports",
                end - 1
            ),
        ));
    }
    // Below the mark every port is held or listed free; past the new end none is held.
    sqlx::query("DELETE FROM free_ports WHERE service = ?1 AND port >= ?2")
        .bind(service)
        .bind(end)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE services SET port_span = ?1, next_port = MIN(next_port, ?2) WHERE name = ?3",
    )
    .bind(span)
    .bind(end)
    .bind(service)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A fresh secret for a credential of `protocol`: a Shadowsocks password is 16 random bytes,
/// base64url without padding, and so is a proxy password; a VLESS id is a random (version 4)
/// UUID. A WireGuard credential has no secret of its own: its keys are per host
/// (`wireguard`), so the column stays empty.
pub(super) fn secret(rng: &SystemRandom, protocol: Protocol) -> Result<String> {
    let mut bytes = [0u8; SECRET_BYTES];
    rng.fill(&mut bytes).map_err(|_| StoreError::Random)?;
    Ok(match protocol {
        Protocol::Shadowsocks | Protocol::Proxy => URL_SAFE_NO_PAD.encode(bytes),
        Protocol::Vless => uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string(),
        Protocol::Wireguard => String::new(),
    })
}

/// One credential to insert: `(user id, own port, secret)`; no port where users share the
/// service's.
pub(super) type NewCredential = (String, Option<u16>, String);

/// Inserts credentials of one service in multi-row statements.
pub(super) async fn insert_credentials(
    conn: &mut SqliteConnection,
    service: &str,
    creds: &[NewCredential],
) -> Result<()> {
    for chunk in creds.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("INSERT INTO credentials (user_id, service, port, secret) ");
        q.push_values(chunk, |mut row, (user, port, secret)| {
            row.push_bind(user)
                .push_bind(service)
                .push_bind(*port)
                .push_bind(secret);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}
