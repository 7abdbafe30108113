//! The Xray-core engine of the VLESS driver: one container per service, every user on the
//! service port, users changed hot through the gRPC API (never by a restart).
//!
//! - [`config`]: the engine's JSON configuration (pure, golden-tested).
//! - [`api`]: the HandlerService / StatsService client.
//!
//! Which users the running engine holds is not something Xray's API can list (v2ray 4 cannot,
//! older Xray cannot), so the engine keeps a record: `engine-users.json` in the service's run
//! directory, written after every change, with the engine's start time. Each apply compares the
//! desired users with that record and adds or removes only the difference. When the engine
//! restarted since the record (its uptime says so), it loaded `config.json` — which every apply
//! rewrites with the desired users before touching the API — and the record is re-made by
//! adding every desired user (an existing one answers "already exists", which is success) and
//! removing every recorded user no longer desired.

pub mod api;
pub mod config;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vpn_shared::fsutil::{SECRET_MODE, write_atomic};
use vpn_shared::model::{ServiceSpec, VLESS_FLOW, VlessOptions};
use vpn_shared::proto::ResourceResult;

use self::api::{ApiAddress, Flavor, XrayApi};
use super::VlessUser;
use crate::apply::docker::ContainerSpec;
use crate::drivers::{
    Bytes, Counters, DriverError, EndSessions, Rendered, RunFile, ServiceCtx, UserCounter,
    UsersReport, service_resource, user_mark, user_resource,
};
use crate::drivers::{LABEL_CONFIG, bind_of, config_digest};

/// Image used when the service names none (SPEC §2.4); its entrypoint is the `xray` binary.
pub const DEFAULT_IMAGE: &str = "ghcr.io/xtls/xray-core:latest";
/// The configuration file in the service's run directory.
const CONFIG_FILE: &str = "config.json";
/// The API's socket in the service's run directory.
const API_SOCKET: &str = "api.sock";
/// The record of the running engine's users.
const RECORD_FILE: &str = "engine-users.json";
/// One API call's deadline.
const API_TIMEOUT: Duration = Duration::from_secs(3);
/// Engine start times closer than this are the same start (uptime has whole seconds).
const SAME_START_SECS: u64 = 3;

/// The API's unix socket in the service's run directory (mode 0700, bind-mounted at the same
/// path): the API has no authentication, so it has no TCP port at all.
pub fn api_socket(run_dir: &Path) -> PathBuf {
    run_dir.join(API_SOCKET)
}

fn api_of(service: &ServiceSpec, run_dir: &Path) -> Result<XrayApi, DriverError> {
    let address = ApiAddress::Unix(api_socket(run_dir));
    XrayApi::new(&address, Flavor::Xray, API_TIMEOUT).map_err(|e| DriverError::Engine {
        service: service.name.clone(),
        message: e.to_string(),
    })
}

/// The marks of the shaped users, as tc and the outbounds both use them.
fn xray_users<'a>(users: &'a [VlessUser<'a>]) -> Vec<config::XrayUser<'a>> {
    users
        .iter()
        .map(|u| config::XrayUser {
            email: u.id,
            uuid: u.uuid,
            mark: u.shaped.then(|| user_mark(u.uuid)),
        })
        .collect()
}

/// The service's container: `xray run -c <run dir>/config.json`, host network.
///
/// The spec hash sees the configuration *without* its users (a label with its digest): users
/// come and go through the API, and the file's users only matter when Xray starts.
pub fn render(
    service: &ServiceSpec,
    options: &VlessOptions,
    users: &[VlessUser<'_>],
    ctx: &ServiceCtx<'_>,
) -> Result<Rendered, DriverError> {
    let bind = bind_of(ctx)?;
    let socket = api_socket(ctx.run_dir).display().to_string();
    let xs = config::XrayService {
        port: service.port,
        api_socket: &socket,
        options,
    };
    let skeleton = config::render(&xs, &[]);
    let full = config::render(&xs, &xray_users(users));
    let path = ctx.run_dir.join(CONFIG_FILE).display().to_string();
    let spec = ContainerSpec {
        name: ctx.container.to_owned(),
        image: service
            .image
            .clone()
            .unwrap_or_else(|| DEFAULT_IMAGE.into()),
        cmd: vec!["run".into(), "-c".into(), path],
        env: Vec::new(),
        binds: vec![bind],
        network_mode: ctx.network_mode.to_owned(),
        labels: BTreeMap::from([
            ("vpn-fleet.service".into(), service.name.clone()),
            ("vpn-fleet.protocol".into(), "vless".into()),
            ("vpn-fleet.engine".into(), "xray".into()),
            (LABEL_CONFIG.into(), config_digest(skeleton.as_bytes())),
        ]),
        cap_add: Vec::new(),
        devices: Vec::new(),
    };
    Ok(Rendered {
        spec,
        files: vec![RunFile {
            name: CONFIG_FILE.into(),
            contents: full.into_bytes(),
        }],
        user: None,
    })
}

/// What the running engine of one service holds, as far as this agent did it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// Unix seconds when the engine started (now − uptime).
    started: u64,
    /// Email (the user's id) → UUID.
    users: BTreeMap<String, String>,
}

impl Record {
    fn load(run_dir: &Path) -> Option<Record> {
        let bytes = std::fs::read(run_dir.join(RECORD_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn save(&self, run_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        write_atomic(&run_dir.join(RECORD_FILE), &bytes, SECRET_MODE)
    }
}

/// The changes that bring `engine` (`None`: unknown, the engine restarted) to `desired`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sync<'a> {
    removes: Vec<String>,
    adds: Vec<(&'a str, &'a str)>,
}

fn plan<'a>(engine: Option<&Record>, recorded: &Record, desired: &[VlessUser<'a>]) -> Sync<'a> {
    let want: BTreeMap<&str, &str> = desired.iter().map(|u| (u.id, u.uuid)).collect();
    let mut sync = Sync::default();
    match engine {
        Some(held) => {
            for (email, uuid) in &held.users {
                if want.get(email.as_str()) != Some(&uuid.as_str()) {
                    sync.removes.push(email.clone());
                }
            }
            for (email, uuid) in &want {
                if held.users.get(*email).map(String::as_str) != Some(*uuid) {
                    sync.adds.push((email, uuid));
                }
            }
        }
        None => {
            // Unknown: every recorded user not wanted (or with another id) goes, every wanted
            // user is added; both are idempotent on the engine's side.
            for (email, uuid) in &recorded.users {
                if want.get(email.as_str()) != Some(&uuid.as_str()) {
                    sync.removes.push(email.clone());
                }
            }
            sync.adds = want.into_iter().collect();
        }
    }
    sync
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The per-service records of this agent's Xray engines.
#[derive(Debug, Default)]
pub struct Engines {
    records: Mutex<Option<HashMap<String, Record>>>,
}

impl Engines {
    pub const fn new() -> Engines {
        Engines {
            records: Mutex::new(None),
        }
    }

    fn record(&self, service: &str, run_dir: &Path) -> Record {
        let mut guard = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        map.entry(service.to_owned())
            .or_insert_with(|| Record::load(run_dir).unwrap_or_default())
            .clone()
    }

    fn store(&self, service: &str, run_dir: &Path, record: Record) {
        if let Err(e) = record.save(run_dir) {
            warn!(service, error = %e, "xray user record not saved");
        }
        let mut guard = self.records.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .get_or_insert_with(HashMap::new)
            .insert(service.to_owned(), record);
    }

    /// Brings the engine's users to `users` through the API and reports per resource.
    pub async fn apply_users(
        &self,
        service: &ServiceSpec,
        users: &[VlessUser<'_>],
        ctx: &ServiceCtx<'_>,
        ready_within: Duration,
    ) -> UsersReport {
        let name = service.name.as_str();
        let fail = |msg: String| super::failed(service, users, &msg);
        let api = match api_of(service, ctx.run_dir) {
            Ok(api) => api,
            Err(e) => return fail(e.to_string()),
        };
        let uptime = match api.wait_ready(ready_within).await {
            Ok(u) => u,
            Err(e) => return fail(e.to_string()),
        };
        let started = unix_now().saturating_sub(uptime.as_secs());
        let recorded = self.record(name, ctx.run_dir);
        let same_engine = recorded.started.abs_diff(started) <= SAME_START_SECS;
        let sync = plan(same_engine.then_some(&recorded), &recorded, users);

        let mut report = UsersReport::default();
        let mut held = if same_engine {
            recorded.users.clone()
        } else {
            BTreeMap::new()
        };
        let mut errors: BTreeMap<String, String> = BTreeMap::new();
        let mut ended = Vec::new();
        for email in &sync.removes {
            report.removes += 1;
            match api.remove_user(config::INBOUND_TAG, email).await {
                Ok(()) => {
                    info!(service = name, user = %email, "xray user removed");
                    if let Some(uuid) = recorded.users.get(email) {
                        ended.push(user_mark(uuid));
                    }
                    held.remove(email);
                }
                Err(e) if e.is_already_applied() => {
                    held.remove(email);
                }
                Err(e) => {
                    errors.insert(email.clone(), e.to_string());
                }
            }
        }
        for (email, uuid) in &sync.adds {
            report.adds += 1;
            match api
                .add_vless_user(config::INBOUND_TAG, email, uuid, VLESS_FLOW)
                .await
            {
                Ok(()) => {
                    info!(service = name, user = %email, "xray user added");
                    held.insert((*email).to_owned(), (*uuid).to_owned());
                }
                Err(e) if e.is_already_applied() => {
                    held.insert((*email).to_owned(), (*uuid).to_owned());
                }
                Err(e) => {
                    errors.insert((*email).to_owned(), e.to_string());
                }
            }
        }
        if !sync.removes.is_empty() || !sync.adds.is_empty() || !same_engine {
            self.store(
                name,
                ctx.run_dir,
                Record {
                    started,
                    users: held.clone(),
                },
            );
        }
        for u in users {
            let resource = user_resource(u.name, name);
            report.results.push(match errors.get(u.id) {
                Some(e) => ResourceResult::error(resource, e.as_str()),
                None if held.get(u.id).map(String::as_str) == Some(u.uuid) => {
                    ResourceResult::ok(resource)
                }
                None => ResourceResult::error(resource, "not held by the engine"),
            });
        }
        let removal_errors: Vec<String> = sync
            .removes
            .iter()
            .filter_map(|e| errors.get(e).map(|m| format!("removing {e}: {m}")))
            .collect();
        report.results.push(if removal_errors.is_empty() {
            ResourceResult::ok(service_resource(name))
        } else {
            ResourceResult::error(service_resource(name), removal_errors.join("; "))
        });
        // Xray has no call that ends a user's open connections; a shaped user's outbound
        // sockets carry their mark, so the applier can reset those (`ss -K fwmark`).
        report.end = EndSessions {
            ports: Vec::new(),
            marks: ended,
        };
        report
    }
}

/// Every user's counters from the StatsService, read without reset.
pub async fn read_counters(
    service: &ServiceSpec,
    users: &[VlessUser<'_>],
    run_dir: &Path,
) -> Result<Counters, DriverError> {
    let engine = |e: api::XrayApiError| DriverError::Engine {
        service: service.name.clone(),
        message: e.to_string(),
    };
    let api = api_of(service, run_dir)?;
    let uptime = api.uptime().await.map_err(engine)?;
    let traffic = api.all_user_traffic().await.map_err(engine)?;
    let users = users
        .iter()
        .filter_map(|u| {
            let t = traffic.get(u.id)?;
            Some(UserCounter {
                user: u.name.to_owned(),
                bytes: Bytes::Directional {
                    up: t.uplink,
                    down: t.downlink,
                },
            })
        })
        .collect();
    // Counters live in the engine's memory: the uptime tells a restart.
    Ok(Counters {
        uptime: Some(uptime),
        users,
    })
}

#[cfg(test)]
mod tests;
