//! Users: adding one issues its credentials and puts it on its hosts; suspending, resuming and
//! removing it take it off or put it back; editing its rate limit updates its spec. Each change
//! touches only that user's hosts. Listing
//! is a fixed number of queries however many users there are (100,000 is the target).

use std::collections::HashMap;

use sqlx::SqliteConnection;

use super::error::{Result, StoreError};
use super::quota::{QUOTA_COLUMNS, QuotaRecord, QuotaState};
use super::rows::{
    CredentialRow, EditUserFields, HOST_COLUMNS, HostRow, NewUser, QuotaEditFields, UserDetail,
    UserRow, UserStatus, bandwidth_from_db, format_protocols, parse_options, parse_protocol,
    parse_protocols, parse_status, rate_to_db, servers,
};
use super::{Mutation, Store, ports, quota, state, validate};

/// A `users` row before its explicit server names are attached.
type UserRaw = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
);

const USER_COLUMNS: &str = "id, name, email, note, status, all_servers, protocols, \
    bandwidth_down, bandwidth_up, created_at, updated_at";

fn user_row(raw: UserRaw, names: Vec<String>) -> Result<UserRow> {
    let (id, name, email, note, status, all, protocols, down, up, created_at, updated_at) = raw;
    Ok(UserRow {
        status: parse_status(&status)?,
        servers: servers(all, names),
        protocols: parse_protocols(protocols.as_deref())?,
        bandwidth: bandwidth_from_db(down, up)?,
        id,
        name,
        email,
        note,
        created_at,
        updated_at,
    })
}

/// Loads one user by name with its explicit server names.
async fn load_user(conn: &mut SqliteConnection, name: &str) -> Result<Option<UserRow>> {
    load_user_where(conn, "name", name).await
}

/// Loads one user by id with its explicit server names.
pub(super) async fn load_user_by_id(
    conn: &mut SqliteConnection,
    id: &str,
) -> Result<Option<UserRow>> {
    load_user_where(conn, "id", id).await
}

async fn load_user_where(
    conn: &mut SqliteConnection,
    column: &'static str,
    key: &str,
) -> Result<Option<UserRow>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = ?1");
    let Some(raw) = sqlx::query_as::<_, UserRaw>(&sql)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT h.name FROM user_servers us JOIN hosts h ON h.id = us.host_id \
         WHERE us.user_id = ?1 ORDER BY h.name",
    )
    .bind(&raw.0)
    .fetch_all(conn)
    .await?;
    user_row(raw, names).map(Some)
}

async fn require_user(conn: &mut SqliteConnection, name: &str) -> Result<UserRow> {
    load_user(conn, name)
        .await?
        .ok_or_else(|| StoreError::not_found("user", name))
}

fn is_all(user: &UserRow) -> bool {
    matches!(user.servers, super::Servers::All)
}

impl Store {
    /// Adds a user with a credential for every deployed service its protocols allow, in the
    /// status its quota gives it now, and puts it on its hosts if that status serves.
    pub async fn add_user(&self, new: NewUser, now: i64) -> Result<Mutation<UserRow>> {
        validate::user_name(&new.name)?;
        validate::email(new.email.as_deref())?;
        validate::note(new.note.as_deref())?;
        validate::bandwidth(&new.bandwidth)?;
        validate::quota(&new.quota)?;
        let protocols = validate::protocols(new.protocols)?;
        let facts = crate::quota::Facts {
            limits: new.quota.limits(),
            suspended: false,
            used: 0,
            first_use: None,
        };
        let status = quota::status_of(crate::quota::evaluate(&facts, now, self.offset).status);

        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        if load_user(conn, &new.name).await?.is_some() {
            return Err(StoreError::Duplicate {
                what: "user",
                name: new.name,
            });
        }
        let (all, host_ids) = state::resolve_servers(conn, &new.servers).await?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO users (id, name, email, note, status, all_servers, protocols, \
             bandwidth_down, bandwidth_up, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        )
        .bind(&id)
        .bind(&new.name)
        .bind(&new.email)
        .bind(&new.note)
        .bind(status.as_str())
        .bind(all)
        .bind(format_protocols(protocols.as_deref()))
        .bind(rate_to_db(new.bandwidth.down_bps)?)
        .bind(rate_to_db(new.bandwidth.up_bps)?)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        for host in &host_ids {
            sqlx::query("INSERT INTO user_servers (user_id, host_id) VALUES (?1, ?2)")
                .bind(&id)
                .bind(host)
                .execute(&mut *conn)
                .await?;
        }

        let services: Vec<(String, String, String)> =
            sqlx::query_as("SELECT name, protocol, options FROM services ORDER BY name")
                .fetch_all(&mut *conn)
                .await?;
        for (service, protocol, options) in services {
            let protocol = parse_protocol(&protocol)?;
            if protocols.as_ref().is_none_or(|p| p.contains(&protocol)) {
                let port = if parse_options(&options)?.port_per_user() {
                    ports::allocate(conn, &service, 1).await?.pop()
                } else {
                    None
                };
                let creds = [(id.clone(), port, ports::secret(&self.rng, protocol)?)];
                ports::insert_credentials(conn, &service, &creds).await?;
            }
        }

        quota::insert(conn, &id, &new.quota).await?;
        let mut pushes = if status.serves() {
            state::push_user(conn, &id, &new.name, all, true).await?
        } else {
            Vec::new()
        };
        let user = require_user(conn, &new.name).await?;
        // Writes the period and the first check (an expiry, a hold's timeout); the status stays.
        quota::evaluate_user(conn, &user, false, now, self.offset).await?;
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: user,
            pushes,
        })
    }

    /// The name of the user with this id, if it exists.
    pub async fn user_name(&self, id: &str) -> Result<Option<String>> {
        let name = sqlx::query_scalar("SELECT name FROM users WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(name)
    }

    /// Every user, by name, in a fixed number of queries.
    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let mut tx = self.read().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        let raw: Vec<UserRaw> = sqlx::query_as(&sql).fetch_all(&mut *tx).await?;
        let links: Vec<(String, String)> = sqlx::query_as(
            "SELECT us.user_id, h.name FROM user_servers us JOIN hosts h ON h.id = us.host_id \
             ORDER BY h.name",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        for (user, host) in links {
            names.entry(user).or_default().push(host);
        }
        raw.into_iter()
            .map(|raw| {
                let n = names.remove(&raw.0).unwrap_or_default();
                user_row(raw, n)
            })
            .collect()
    }

    /// Every user with its quota row, by name: what `users list` shows.
    ///
    /// SQLite hands the whole list over as one JSON value (one row per user inside, with the
    /// user's explicit hosts joined by commas, which host names cannot hold): handing 100,000
    /// rows over one at a time costs the store thread and the caller a wake-up each, which
    /// was most of a 100,000-user `users list` (issue 10). A user without its quota row is
    /// a corrupt store, as in [`Store::quota`].
    pub async fn users_with_quotas(&self) -> Result<Vec<(UserRow, QuotaState)>> {
        /// One user: its `users` columns as [`UserRaw`], its host names, its quota row.
        type Listed = (UserRaw, Option<String>, QuotaRecord);
        let mut tx = self.read().await?;
        let text: Option<String> = sqlx::query_scalar(&format!(
            "SELECT json_group_array(json_array(json_array({users}), \
               (SELECT group_concat(h.name, ',') FROM user_servers us \
                JOIN hosts h ON h.id = us.host_id WHERE us.user_id = u.id), \
               json_array(q.user_id, {quota}))) \
             FROM users u LEFT JOIN user_quota q ON q.user_id = u.id",
            users = USER_COLUMNS
                .split(", ")
                .map(|c| match c {
                    // A JSON boolean, as `UserRaw` has it.
                    "all_servers" =>
                        "json(CASE WHEN u.all_servers THEN 'true' ELSE 'false' END)".to_string(),
                    c => format!("u.{c}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            quota = QUOTA_COLUMNS
                .split(", ")
                .map(|c| format!("q.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        ))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let listed: Vec<Listed> = serde_json::from_str(text.as_deref().unwrap_or("[]"))
            .map_err(|e| StoreError::corrupt("user list", e))?;
        let mut out = listed
            .into_iter()
            .map(|(raw, hosts, quota)| {
                let mut names: Vec<String> = hosts
                    .map(|h| h.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                names.sort_unstable();
                let (_, quota) = quota.split()?;
                Ok((user_row(raw, names)?, quota))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_unstable_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    /// One user with its credentials and the hosts it is assigned to.
    pub async fn user(&self, name: &str) -> Result<Option<UserDetail>> {
        let mut tx = self.read().await?;
        let Some(user) = load_user(&mut tx, name).await? else {
            return Ok(None);
        };
        let creds: Vec<(String, String, u16, String, String)> = sqlx::query_as(
            "SELECT c.service, s.protocol, COALESCE(c.port, s.port), c.secret, s.options FROM credentials c \
             JOIN services s ON s.name = c.service WHERE c.user_id = ?1 ORDER BY c.service",
        )
        .bind(&user.id)
        .fetch_all(&mut *tx)
        .await?;
        let sql = format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE ?1 OR id IN \
             (SELECT host_id FROM user_servers WHERE user_id = ?2) ORDER BY name"
        );
        let hosts: Vec<HostRow> = sqlx::query_as(&sql)
            .bind(is_all(&user))
            .bind(&user.id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let credentials = creds
            .into_iter()
            .map(|(service, protocol, port, secret, options)| {
                Ok(CredentialRow {
                    service,
                    protocol: parse_protocol(&protocol)?,
                    port,
                    secret,
                    options: parse_options(&options)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(UserDetail {
            user,
            credentials,
            hosts,
        }))
    }

    /// Suspends a user (`Suspended`: off its hosts until resumed) or resumes one (`Active`:
    /// the suspension lifted, the user takes the status its quota gives it — a user over its
    /// limit comes back `limited`). Anything that changes nothing pushes nothing.
    pub async fn set_user_status(
        &self,
        name: &str,
        status: UserStatus,
        now: i64,
    ) -> Result<Mutation<UserRow>> {
        let suspend = match status {
            UserStatus::Suspended => true,
            UserStatus::Active => false,
            other => {
                return Err(StoreError::Invalid {
                    field: "status",
                    reason: format!("{other} is decided by the user's quota, not set"),
                });
            }
        };
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let user = require_user(conn, name).await?;
        let (_, mut pushes) = quota::evaluate_user(conn, &user, suspend, now, self.offset).await?;
        let user = require_user(conn, name).await?;
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: user,
            pushes,
        })
    }

    /// Edits a user's email, note and rate limit. Only a changed limit of a served user reaches
    /// hosts (its spec on each of them); an edit that changes nothing writes nothing.
    pub async fn edit_user(
        &self,
        name: &str,
        edit: EditUserFields,
        now: i64,
    ) -> Result<Mutation<UserRow>> {
        self.edit_user_with(name, edit, QuotaEditFields::default(), now)
            .await
    }

    /// [`Store::edit_user`] and a quota change in one transaction; the user is evaluated
    /// again, so a raised limit or a later expiry brings a limited or expired user back.
    pub async fn edit_user_with(
        &self,
        name: &str,
        edit: EditUserFields,
        quota_edit: QuotaEditFields,
        now: i64,
    ) -> Result<Mutation<UserRow>> {
        if let Some(email) = &edit.email {
            validate::email(email.as_deref())?;
        }
        if let Some(note) = &edit.note {
            validate::note(note.as_deref())?;
        }
        if let Some(b) = &edit.bandwidth {
            validate::bandwidth(b)?;
        }
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let user = require_user(conn, name).await?;
        let mut pushes = Vec::new();
        if !quota_edit.is_empty() {
            let old = quota::load(conn, &user.id).await?;
            let settings = quota_edit.apply(&old.settings);
            validate::quota(&settings)?;
            if settings != old.settings {
                quota::replace_settings(conn, &user.id, &old, &settings, now, self.offset).await?;
                sqlx::query("UPDATE users SET updated_at = ?1 WHERE id = ?2")
                    .bind(now)
                    .bind(&user.id)
                    .execute(&mut *conn)
                    .await?;
                let suspended = user.status == UserStatus::Suspended;
                let (_, p) = quota::evaluate_user(conn, &user, suspended, now, self.offset).await?;
                pushes = p;
            }
        }
        // The quota may have changed the status (and so whether hosts hold the user).
        let user = require_user(conn, name).await?;
        let mut new = user.clone();
        if let Some(email) = edit.email {
            new.email = email;
        }
        if let Some(note) = edit.note {
            new.note = note;
        }
        if let Some(b) = edit.bandwidth {
            new.bandwidth = b;
        }
        if new == user {
            self.finish(w, &mut pushes).await?;
            return Ok(Mutation {
                value: user,
                pushes,
            });
        }
        sqlx::query(
            "UPDATE users SET email = ?1, note = ?2, bandwidth_down = ?3, bandwidth_up = ?4, \
             updated_at = ?5 WHERE id = ?6",
        )
        .bind(&new.email)
        .bind(&new.note)
        .bind(rate_to_db(new.bandwidth.down_bps)?)
        .bind(rate_to_db(new.bandwidth.up_bps)?)
        .bind(now)
        .bind(&user.id)
        .execute(&mut *conn)
        .await?;
        if user.status.serves() && new.bandwidth != user.bandwidth {
            pushes.extend(state::push_user(conn, &user.id, &user.name, is_all(&user), true).await?);
        }
        let user = require_user(conn, name).await?;
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: user,
            pushes,
        })
    }

    /// Removes a user; its ports return to the services' free lists. A served user is taken
    /// off its hosts; any other pushes nothing, since no host holds it.
    pub async fn remove_user(&self, name: &str) -> Result<Mutation<UserRow>> {
        let mut w = self.write().await?;
        let conn = &mut *w.tx;
        let user = require_user(conn, name).await?;
        let mut pushes = if user.status.serves() {
            state::push_user(conn, &user.id, &user.name, is_all(&user), false).await?
        } else {
            Vec::new()
        };
        sqlx::query("DELETE FROM users WHERE id = ?1")
            .bind(&user.id)
            .execute(&mut *conn)
            .await?;
        self.finish(w, &mut pushes).await?;
        Ok(Mutation {
            value: user,
            pushes,
        })
    }
}
