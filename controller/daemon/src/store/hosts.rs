//! Hosts: creation with a one-time join token, enrollment, certificates, liveness and acks, and
//! removal, which revokes the host's identity for good (SPEC §2.2).
//!
//! Adding or removing a host pushes nothing: a new host gets its full state when it connects, and
//! a removed host's absence changes no other host's state.

use sqlx::SqliteConnection;

use super::error::{Result, StoreError, TokenRefusal};
use super::rows::{HOST_COLUMNS, HostRow};
use super::{Store, generation_to_db, validate};

/// A join token that may enroll, as [`Store::join_token`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinToken {
    /// Valid and unspent: sign a certificate for this host.
    Fresh(HostRow),
    /// Already spent on a certificate.
    Spent(Spent),
}

/// A spent token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent {
    /// Still within its lifetime: the certificate it bought, for a retry with the same key.
    Redeliver {
        host: Box<HostRow>,
        cert_pem: String,
        /// SHA-256 (hex) of the public key the certificate is for.
        key_sha256: String,
    },
    /// Past its lifetime, or spent before certificates were kept: nothing to hand out.
    Closed,
}

/// A certificate just signed for an enrolling host, as [`Store::complete_enrollment`] records it.
#[derive(Debug, Clone)]
pub struct EnrolledCert {
    pub cert_pem: String,
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// SHA-256 (hex) of the public key the certificate is for.
    pub key_sha256: String,
}

/// Loads one host by a column (`id` or `name`).
async fn host_where(
    conn: &mut SqliteConnection,
    column: &str,
    key: &str,
) -> Result<Option<HostRow>> {
    let sql = format!("SELECT {HOST_COLUMNS} FROM hosts WHERE {column} = ?1");
    Ok(sqlx::query_as(&sql).bind(key).fetch_optional(conn).await?)
}

/// A join token as stored.
#[derive(sqlx::FromRow)]
struct TokenRow {
    host_id: String,
    expires_at: i64,
    used_at: Option<i64>,
    cert_pem: Option<String>,
    key_sha256: Option<String>,
}

async fn token_row(conn: &mut SqliteConnection, token_hash: &str) -> Result<Option<TokenRow>> {
    Ok(sqlx::query_as(
        "SELECT host_id, expires_at, used_at, cert_pem, key_sha256 FROM join_tokens \
         WHERE token_hash = ?1",
    )
    .bind(token_hash)
    .fetch_optional(conn)
    .await?)
}

/// What a spent token offers a retry: its certificate again while the token's lifetime lasts
/// (so a lost answer can be fetched again), nothing after that.
fn spent(host: HostRow, token: TokenRow, now: i64) -> Spent {
    match (token.cert_pem, token.key_sha256) {
        (Some(cert_pem), Some(key_sha256)) if now < token.expires_at => Spent::Redeliver {
            host: Box::new(host),
            cert_pem,
            key_sha256,
        },
        _ => Spent::Closed,
    }
}

/// An `UPDATE` of a host by id that touched no row means there is no such host.
fn found(rows_affected: u64, id: &str) -> Result<()> {
    if rows_affected == 0 {
        return Err(StoreError::not_found("host", id));
    }
    Ok(())
}

impl Store {
    /// Creates a host named `name` with a join token (given as its SHA-256 hex) valid until
    /// `token_expires_at`. The host's generation starts at 0.
    pub async fn add_host(
        &self,
        name: &str,
        token_hash: &str,
        token_expires_at: i64,
        now: i64,
    ) -> Result<HostRow> {
        validate::host_name(name)?;
        validate::token_hash(token_hash)?;
        let mut w = self.write().await?;
        if host_where(&mut w.tx, "name", name).await?.is_some() {
            return Err(StoreError::Duplicate {
                what: "server",
                name: name.to_owned(),
            });
        }
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO hosts (id, name, created_at) VALUES (?1, ?2, ?3)")
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query(
            "INSERT INTO join_tokens (token_hash, host_id, expires_at) VALUES (?1, ?2, ?3)",
        )
        .bind(token_hash)
        .bind(&id)
        .bind(token_expires_at)
        .execute(&mut *w.tx)
        .await?;
        let host = host_where(&mut w.tx, "id", &id).await?;
        w.commit().await?;
        host.ok_or_else(|| StoreError::not_found("host", id))
    }

    /// Looks a join token up without spending it: the host to sign for, or, if the token was
    /// already spent, what it bought. Refused as `Unknown` (never issued, or its host was
    /// removed) or `Expired` (a token is valid strictly before its expiry); a spent token is
    /// [`JoinToken::Spent`] even after expiry, so a replay reads as used, not unknown.
    pub async fn join_token(&self, token_hash: &str, now: i64) -> Result<JoinToken> {
        let mut conn = self.pool.acquire().await?;
        let token = token_row(&mut conn, token_hash).await?;
        let token = token.ok_or(StoreError::TokenRefused(TokenRefusal::Unknown))?;
        let host = host_where(&mut conn, "id", &token.host_id)
            .await?
            .ok_or(StoreError::TokenRefused(TokenRefusal::Unknown))?;
        if token.used_at.is_some() {
            return Ok(JoinToken::Spent(spent(host, token, now)));
        }
        if now >= token.expires_at {
            return Err(StoreError::TokenRefused(TokenRefusal::Expired));
        }
        Ok(JoinToken::Fresh(host))
    }

    /// Spends a join token on the certificate just signed with it, in one transaction: the
    /// token is marked used, the host enrolled at `now` with that certificate, and the
    /// certificate kept with the token for a retry. A host is therefore never "enrolled"
    /// without a certificate, and a token is never spent on a certificate that was not
    /// recorded.
    ///
    /// When a concurrent enrollment spent the token first, this one is refused as `Used`
    /// unless it asked for the same key: then it gets that other certificate, which is as good.
    pub async fn complete_enrollment(
        &self,
        token_hash: &str,
        now: i64,
        cert: &EnrolledCert,
    ) -> Result<(HostRow, String)> {
        let mut w = self.write().await?;
        let token = token_row(&mut w.tx, token_hash)
            .await?
            .ok_or(StoreError::TokenRefused(TokenRefusal::Unknown))?;
        let host = host_where(&mut w.tx, "id", &token.host_id)
            .await?
            .ok_or(StoreError::TokenRefused(TokenRefusal::Unknown))?;
        if token.used_at.is_some() {
            drop(w);
            return match spent(host, token, now) {
                Spent::Redeliver {
                    host,
                    cert_pem,
                    key_sha256,
                } if key_sha256 == cert.key_sha256 => Ok((*host, cert_pem)),
                _ => Err(StoreError::TokenRefused(TokenRefusal::Used)),
            };
        }
        if now >= token.expires_at {
            return Err(StoreError::TokenRefused(TokenRefusal::Expired));
        }
        sqlx::query(
            "UPDATE join_tokens SET used_at = ?1, cert_pem = ?2, key_sha256 = ?3 \
             WHERE token_hash = ?4",
        )
        .bind(now)
        .bind(&cert.cert_pem)
        .bind(&cert.key_sha256)
        .bind(token_hash)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query(
            "UPDATE hosts SET enrolled_at = ?1, cert_serial = ?2, cert_not_after = ?3 \
             WHERE id = ?4",
        )
        .bind(now)
        .bind(&cert.serial)
        .bind(cert.not_after)
        .bind(&host.id)
        .execute(&mut *w.tx)
        .await?;
        let host = host_where(&mut w.tx, "id", &host.id).await?;
        w.commit().await?;
        let host = host.ok_or_else(|| StoreError::not_found("host", token.host_id))?;
        Ok((host, cert.cert_pem.clone()))
    }

    /// Records the certificate just issued to a host (at enrollment or renewal).
    pub async fn set_host_certificate(&self, id: &str, serial: &str, not_after: i64) -> Result<()> {
        let mut w = self.write().await?;
        let done =
            sqlx::query("UPDATE hosts SET cert_serial = ?2, cert_not_after = ?3 WHERE id = ?1")
                .bind(id)
                .bind(serial)
                .bind(not_after)
                .execute(&mut *w.tx)
                .await?;
        found(done.rows_affected(), id)?;
        w.commit().await
    }

    /// Records that a host's agent connected or sent a keep-alive from `address`.
    pub async fn record_seen(
        &self,
        id: &str,
        agent_version: &str,
        address: &str,
        now: i64,
    ) -> Result<()> {
        let mut w = self.write().await?;
        let done = sqlx::query(
            "UPDATE hosts SET agent_version = ?2, address = ?3, last_seen = ?4 WHERE id = ?1",
        )
        .bind(id)
        .bind(agent_version)
        .bind(address)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
        found(done.rows_affected(), id)?;
        w.commit().await
    }

    /// Records the generation and digest (hex) a host acknowledged having applied.
    pub async fn record_ack(
        &self,
        id: &str,
        generation: u64,
        digest_hex: &str,
        now: i64,
    ) -> Result<()> {
        let generation = generation_to_db(generation)?;
        let mut w = self.write().await?;
        let done = sqlx::query(
            "UPDATE hosts SET acked_generation = ?2, acked_digest = ?3, last_seen = ?4 \
             WHERE id = ?1",
        )
        .bind(id)
        .bind(generation)
        .bind(digest_hex)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
        found(done.rows_affected(), id)?;
        w.commit().await
    }

    /// One host by id.
    pub async fn host(&self, id: &str) -> Result<Option<HostRow>> {
        let mut conn = self.pool.acquire().await?;
        host_where(&mut conn, "id", id).await
    }

    /// One host by name.
    pub async fn host_by_name(&self, name: &str) -> Result<Option<HostRow>> {
        let mut conn = self.pool.acquire().await?;
        host_where(&mut conn, "name", name).await
    }

    /// Every host, by name.
    pub async fn hosts(&self) -> Result<Vec<HostRow>> {
        let sql = format!("SELECT {HOST_COLUMNS} FROM hosts ORDER BY name");
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    /// Removes a host with its join tokens and its places in explicit server lists, and
    /// remembers its id as revoked so its still-valid certificate is refused from now on.
    pub async fn remove_host(&self, name: &str, now: i64) -> Result<HostRow> {
        let mut w = self.write().await?;
        let host = host_where(&mut w.tx, "name", name)
            .await?
            .ok_or_else(|| StoreError::not_found("server", name))?;
        sqlx::query("DELETE FROM hosts WHERE id = ?1")
            .bind(&host.id)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query("INSERT INTO revoked_hosts (id, name, revoked_at) VALUES (?1, ?2, ?3)")
            .bind(&host.id)
            .bind(&host.name)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(host)
    }

    /// Whether a host id belongs to a removed host.
    pub async fn is_revoked(&self, id: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM revoked_hosts WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }
}
