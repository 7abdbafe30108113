//! Runs a parsed command: build its admin request, send it, print the answer.
//!
//! Every command is one request and one response; the mapping is the pure [`to_request`],
//! tested without a controller. The health views (SPEC §2.8) and `users list|show` ask with the
//! `…Detail` requests; a controller older than them gets the request it knows instead
//! ([`ask`]). `doctor`, `users usage` and the quota flags of `users add|edit` have no older
//! form: such a controller is reported as too old (exit 76). Without quota flags, `users
//! add|edit` send the requests every controller knows. List requests go out wrapped in
//! `InChunks` ([`in_chunks`]), so that an answer larger than a frame comes in parts; a
//! controller older than that is asked again without it.

use vpn_shared::context::CliContext;
use vpn_shared::model::{Bandwidth, Protocol};
use vpn_shared::proto::admin::{
    AddUser, AdminRequest, AdminResponse, CheckLevel, DeployOptions, DeployService, DeployVless,
    DeployWireguard, EditService, EditUser, ErrorKind, HostApplyState, OnHoldSpec, Quota,
    QuotaEdit, Servers, UsageBy, UsageQuery,
};

use crate::cli::moment::secs;
use crate::cli::{
    AddUserArgs, Cli, Command, DeployArgs, EditServiceArgs, EditUserArgs, FirewallCmd,
    FirewallRuleArgs, Moment, QuotaArgs, ServersCmd, ServicesCmd, Target, ThemeArg, UsageArgs,
    UsersCmd,
};
use crate::client::Client;
use crate::error::CliError;
use crate::{output, render};

/// Writes the completion script for the requested shell to stdout.
fn completions(cli: &Cli) -> Result<(), CliError> {
    let Command::Completions { shell } = &cli.command else {
        return Ok(());
    };
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(*shell, &mut cmd, "vpn", &mut script);
    output::stdout(&String::from_utf8_lossy(&script))
}

pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Tui { theme } = &cli.command {
        let path = cli.config.clone().unwrap_or_else(CliContext::default_path);
        let ctx = CliContext::load(&path).map_err(|e| CliError::Config(e.to_string()))?;
        let kind = match theme {
            ThemeArg::Dark => vpn_tui::ThemeKind::Dark,
            ThemeArg::Light => vpn_tui::ThemeKind::Light,
        };
        return crate::tui::run(ctx, path, vpn_tui::Theme::new(kind)).await;
    }
    let now = unix_now();
    let Some(request) = to_request(&cli.command, now) else {
        return completions(&cli);
    };
    let path = cli.config.clone().unwrap_or_else(CliContext::default_path);
    let ctx = CliContext::load(&path).map_err(|e| CliError::Config(e.to_string()))?;
    tracing::debug!(context = %path.display(), controller = %ctx.controller, ?request, "sending");

    let client = Client::connect(&ctx, &path).await?;
    let response = ask(&client, &in_chunks(request)).await;
    let printed = response.and_then(|resp| {
        let opts = render::Opts {
            format: cli.output,
            qr: wants_qr(&cli.command),
            now,
            hints: output::stdout_is_terminal(),
        };
        let text = if wants_conf(&cli.command) {
            render::artefacts(&resp, &opts)?
        } else {
            render::render(&resp, &opts)?
        };
        output::stdout(&text)?;
        outcome(&resp)
    });
    // Printed before closing so the operator is not kept waiting on the close handshake.
    client.close().await;
    printed
}

/// Sends `req`; when the controller is older than the request ([`not_served`]), sends the
/// request it knows instead ([`legacy`]) so its answer is rendered as before, or, when there is
/// none, says the controller must be upgraded ([`CliError::Unsupported`], exit 76). A request
/// with two older forms (`InChunks(UsersListDetail)`: `UsersListDetail`, then `UsersList`) may
/// be asked three times by a controller older than both.
pub async fn ask(client: &Client, req: &AdminRequest) -> Result<AdminResponse, CliError> {
    let mut req = std::borrow::Cow::Borrowed(req);
    loop {
        let resp = client.request(&req).await?;
        if !not_served(&req, &resp) {
            return Ok(resp);
        }
        let Some(old) = legacy(&req) else {
            let AdminResponse::Error { message, .. } = &resp else {
                return Ok(resp);
            };
            return Err(CliError::Unsupported(too_old(&req, message)));
        };
        tracing::debug!(
            ?req,
            ?old,
            "the controller is older than the request; asking as before"
        );
        req = std::borrow::Cow::Owned(old);
    }
}

/// Asks for a list answer in parts ([`AdminRequest::InChunks`]), which is how `users list` at
/// 100,000 users or `servers list` at thousands of hosts gets past the frame limit; other
/// requests are sent as they are (their answers are one object). A controller older than
/// `InChunks` refuses it as malformed and is asked again with the request inside ([`legacy`]).
pub fn in_chunks(req: AdminRequest) -> AdminRequest {
    match req {
        AdminRequest::ServersList
        | AdminRequest::ServersListDetail
        | AdminRequest::ServicesList
        | AdminRequest::UsersList
        | AdminRequest::UsersListDetail
        | AdminRequest::UsersUsage(_)
        | AdminRequest::FirewallList
        | AdminRequest::Doctor => AdminRequest::InChunks(Box::new(req)),
        other => other,
    }
}

/// What to tell the operator when the controller cannot answer `req` at all.
fn too_old(req: &AdminRequest, answer: &str) -> String {
    let what = match req {
        AdminRequest::UsersUsage(_) => "does not record traffic",
        AdminRequest::UsersAddWith { .. } | AdminRequest::UsersEditWith { .. } => {
            "is too old for quotas (--data-limit, --reset, --expires, --on-hold); nothing was \
             changed"
        }
        AdminRequest::ServicesDeployPorts { .. } | AdminRequest::ServicesEditPorts { .. } => {
            "is too old for --ports (the size of a service's port range); nothing was changed"
        }
        _ => "cannot run these checks",
    };
    format!("this controller {what}; upgrade it (it answered: {answer})")
}

/// The request an older controller knows for a health or user detail request, or the request
/// inside `InChunks` (answered in one frame); `None` for `Doctor`, `UsersUsage` and the quota
/// changes, which have no older form.
pub fn legacy(req: &AdminRequest) -> Option<AdminRequest> {
    Some(match req {
        AdminRequest::ServersListDetail => AdminRequest::ServersList,
        AdminRequest::ServersShowDetail { name } => {
            AdminRequest::ServersShow { name: name.clone() }
        }
        AdminRequest::StatusDetail => AdminRequest::Status,
        AdminRequest::ServicesShowDetail { name } => {
            AdminRequest::ServicesShow { name: name.clone() }
        }
        AdminRequest::UsersListDetail => AdminRequest::UsersList,
        AdminRequest::UsersShowDetail { name } => AdminRequest::UsersShow { name: name.clone() },
        AdminRequest::InChunks(inner) => (**inner).clone(),
        _ => return None,
    })
}

/// Whether the controller said it cannot serve `req`, a request newer than some controllers:
/// one that predates the request cannot decode it (`malformed request: …`), one that has the
/// request but not the feature yet says so (`… does not serve host health yet`, `… does not
/// record traffic yet`, `quotas are not supported by this controller yet`). Always `false` for
/// the requests every controller knows, so their refusals stand.
pub fn not_served(req: &AdminRequest, resp: &AdminResponse) -> bool {
    let AdminResponse::Error {
        kind: ErrorKind::BadData,
        message,
    } = resp
    else {
        return false;
    };
    let feature = match req {
        AdminRequest::ServersListDetail
        | AdminRequest::ServersShowDetail { .. }
        | AdminRequest::StatusDetail
        | AdminRequest::ServicesShowDetail { .. }
        | AdminRequest::Doctor => "does not serve host health",
        AdminRequest::UsersUsage(_) => "does not record traffic",
        AdminRequest::UsersAddWith { .. }
        | AdminRequest::UsersEditWith { .. }
        | AdminRequest::UsersListDetail
        | AdminRequest::UsersShowDetail { .. } => "quotas are not supported",
        // Only a controller that cannot decode the wrapper refuses it as such; what it says
        // about the request inside is judged as for that request.
        AdminRequest::InChunks(inner) => {
            return message.starts_with("malformed request") || not_served(inner, resp);
        }
        // Only a controller older than `--ports` refuses these, as malformed.
        AdminRequest::ServicesDeployPorts { .. } | AdminRequest::ServicesEditPorts { .. } => {
            return message.starts_with("malformed request");
        }
        _ => return false,
    };
    message.starts_with("malformed request") || message.contains(feature)
}

/// A deploy: Shadowsocks keeps the request older controllers know; other protocols carry their
/// options in `ServicesDeployWith`, and a deploy with `--ports` in `ServicesDeployPorts`.
fn deploy(a: &DeployArgs) -> AdminRequest {
    let plain = deploy_without_ports(a);
    let Some(ports) = a.ports else {
        return plain;
    };
    let (deploy, options) = match plain {
        AdminRequest::ServicesDeploy(d) => {
            let method = d.method.clone();
            (d, DeployOptions::Shadowsocks { method })
        }
        AdminRequest::ServicesDeployWith { deploy, options } => (deploy, options),
        other => return other,
    };
    AdminRequest::ServicesDeployPorts {
        deploy,
        options,
        ports,
    }
}

fn deploy_without_ports(a: &DeployArgs) -> AdminRequest {
    let deploy = DeployService {
        protocol: a.protocol,
        name: a.name.clone(),
        port: a.port,
        servers: servers(&a.target),
        image: a.image.clone(),
        method: a.method.clone(),
        bandwidth: a.bandwidth.map(both).unwrap_or_default(),
        new_conn_rate: a.conn_rate,
        wait: !a.wait.no_wait,
    };
    match a.protocol {
        Protocol::Shadowsocks => AdminRequest::ServicesDeploy(deploy),
        Protocol::Vless => AdminRequest::ServicesDeployWith {
            deploy,
            options: DeployOptions::Vless(DeployVless {
                engine: a.engine,
                // Cli::check makes sure both are there for vless.
                sni: a.sni.clone().unwrap_or_default(),
                dest: a.dest.clone().unwrap_or_default(),
                short_ids: a.short_ids,
            }),
        },
        Protocol::Proxy => AdminRequest::ServicesDeployWith {
            deploy,
            options: DeployOptions::Proxy { kind: a.kind },
        },
        Protocol::Wireguard => AdminRequest::ServicesDeployWith {
            deploy,
            options: DeployOptions::Wireguard(DeployWireguard {
                // Cli::check makes sure it is there for wireguard.
                subnet: a.subnet.clone().unwrap_or_default(),
                ipv6_subnet: a.ipv6_subnet.clone(),
                dns: a.dns.clone(),
                mtu: a.mtu,
            }),
        },
    }
}

/// The admin request a command stands for, with `now` (unix seconds) for relative times.
/// `None` for commands answered locally (completions).
pub fn to_request(command: &Command, now: i64) -> Option<AdminRequest> {
    Some(match command {
        Command::Servers(cmd) => match cmd {
            ServersCmd::Add { name, expires } => AdminRequest::ServersAdd {
                name: name.clone(),
                expires_secs: expires.as_secs().max(1),
            },
            ServersCmd::List => AdminRequest::ServersListDetail,
            ServersCmd::Show { name } => AdminRequest::ServersShowDetail { name: name.clone() },
            ServersCmd::Remove { name } => AdminRequest::ServersRemove { name: name.clone() },
        },
        Command::Services(cmd) => match cmd {
            ServicesCmd::Deploy(a) => deploy(a),
            ServicesCmd::List => AdminRequest::ServicesList,
            ServicesCmd::Show { name } => AdminRequest::ServicesShowDetail { name: name.clone() },
            ServicesCmd::Edit(a) => match (image_edit(a), a.ports) {
                (image, Some(ports)) => AdminRequest::ServicesEditPorts {
                    edit: edit_service(a),
                    image,
                    ports,
                },
                (None, None) => AdminRequest::ServicesEdit(edit_service(a)),
                (image, None) => AdminRequest::ServicesEditWith {
                    edit: edit_service(a),
                    image,
                },
            },
            ServicesCmd::Remove { name, wait } => AdminRequest::ServicesRemove {
                name: name.clone(),
                wait: !wait.no_wait,
            },
        },
        Command::Users(cmd) => users_request(cmd, now),
        Command::Firewall(cmd) => match cmd {
            FirewallCmd::Block(a) => {
                let (target, servers, wait) = rule(a);
                AdminRequest::FirewallBlock {
                    target,
                    servers,
                    wait,
                }
            }
            FirewallCmd::Unblock(a) => {
                let (target, servers, wait) = rule(a);
                AdminRequest::FirewallUnblock {
                    target,
                    servers,
                    wait,
                }
            }
            FirewallCmd::List => AdminRequest::FirewallList,
        },
        Command::Status => AdminRequest::StatusDetail,
        Command::Doctor => AdminRequest::Doctor,
        Command::Completions { .. } | Command::Tui { .. } => return None,
    })
}

/// The same rate in both directions.
fn both(bps: u64) -> Bandwidth {
    Bandwidth {
        down_bps: Some(bps),
        up_bps: Some(bps),
    }
}

/// `--image I` / `--default-image` as the wire says them; `None` without either flag (then the
/// request stays the one older controllers know).
fn image_edit(a: &EditServiceArgs) -> Option<Option<String>> {
    if a.default_image {
        Some(None)
    } else {
        a.image.clone().map(Some)
    }
}

fn edit_service(a: &EditServiceArgs) -> EditService {
    let bandwidth = if a.no_bandwidth {
        Some(Bandwidth::default())
    } else {
        a.bandwidth.map(both)
    };
    let new_conn_rate = if a.no_conn_rate {
        Some(None)
    } else {
        a.conn_rate.map(Some)
    };
    EditService {
        name: a.name.clone(),
        bandwidth,
        new_conn_rate,
        wait: !a.wait.no_wait,
    }
}

fn edit_user(a: &EditUserArgs) -> EditUser {
    let bandwidth = if a.no_bandwidth {
        Some(Bandwidth::default())
    } else if let Some(bps) = a.bandwidth {
        Some(both(bps))
    } else if a.down.is_some() || a.up.is_some() {
        Some(Bandwidth {
            down_bps: a.down,
            up_bps: a.up,
        })
    } else {
        None
    };
    EditUser {
        name: a.name.clone(),
        email: a.email.clone(),
        note: a.note.clone(),
        bandwidth,
        wait: !a.wait.no_wait,
    }
}

/// `(target, servers, wait)` of a block or unblock.
fn rule(a: &FirewallRuleArgs) -> (String, Servers, bool) {
    (a.address.clone(), servers(&a.target), !a.wait.no_wait)
}

fn usage(a: &UsageArgs, now: i64) -> AdminRequest {
    use crate::cli::UsageBy as By;
    AdminRequest::UsersUsage(UsageQuery {
        user: a.name.clone(),
        since: a.since.map(|s| s.back_from(now)),
        by: match a.by {
            By::User => UsageBy::User,
            By::Server => UsageBy::Server,
            By::Service => UsageBy::Service,
            By::Day => UsageBy::Day,
        },
    })
}

fn add_user(a: &AddUserArgs) -> AddUser {
    AddUser {
        name: a.name.clone(),
        email: a.email.clone(),
        note: a.note.clone(),
        protocols: a.protocols.clone(),
        servers: servers(&a.target),
        bandwidth: match a.bandwidth {
            Some(bps) => both(bps),
            None => Bandwidth {
                down_bps: a.down,
                up_bps: a.up,
            },
        },
        wait: !a.wait.no_wait,
    }
}

fn on_hold(q: &QuotaArgs) -> Option<OnHoldSpec> {
    q.on_hold.map(|d| OnHoldSpec {
        duration: secs(d),
        timeout: q.on_hold_timeout.map(Moment::ahead),
    })
}

/// A new user's quota; the default quota (no flag) is what `UsersAdd` gives.
fn quota(q: &QuotaArgs) -> Quota {
    Quota {
        data_limit: q.data_limit,
        reset: q.reset.unwrap_or_default(),
        expires: q.expires.map(Moment::ahead),
        on_hold: on_hold(q),
    }
}

/// The quota changes of an edit; the default (no flag) is what `UsersEdit` changes. An expiry
/// and a hold exclude each other, so setting or removing one says what becomes of the other.
fn quota_edit(a: &EditUserArgs) -> QuotaEdit {
    let q = &a.quota;
    let data_limit = if a.no_data_limit {
        Some(None)
    } else {
        q.data_limit.map(Some)
    };
    let (expires, on_hold) = match (q.expires, on_hold(q)) {
        (Some(when), _) => (Some(Some(when.ahead())), Some(None)),
        (None, Some(hold)) => (Some(None), Some(Some(hold))),
        (None, None) if a.no_expiry => (Some(None), Some(None)),
        (None, None) => (None, None),
    };
    QuotaEdit {
        data_limit,
        reset: q.reset,
        expires,
        on_hold,
    }
}

fn users_request(cmd: &UsersCmd, now: i64) -> AdminRequest {
    match cmd {
        UsersCmd::Add(a) => {
            let (add, quota) = (add_user(a), quota(&a.quota));
            if quota == Quota::default() {
                AdminRequest::UsersAdd(add)
            } else {
                AdminRequest::UsersAddWith { add, quota }
            }
        }
        UsersCmd::List => AdminRequest::UsersListDetail,
        UsersCmd::Show { name } => AdminRequest::UsersShowDetail { name: name.clone() },
        UsersCmd::Edit(a) => {
            let (edit, quota) = (edit_user(a), quota_edit(a));
            if quota == QuotaEdit::default() {
                AdminRequest::UsersEdit(edit)
            } else {
                AdminRequest::UsersEditWith { edit, quota }
            }
        }
        UsersCmd::Remove { name, wait } => AdminRequest::UsersRemove {
            name: name.clone(),
            wait: !wait.no_wait,
        },
        UsersCmd::Suspend { name, wait } => AdminRequest::UsersSuspend {
            name: name.clone(),
            wait: !wait.no_wait,
        },
        UsersCmd::Resume { name, wait } => AdminRequest::UsersResume {
            name: name.clone(),
            wait: !wait.no_wait,
        },
        UsersCmd::Link {
            name,
            server,
            protocol,
            ..
        } => AdminRequest::UsersLink {
            name: name.clone(),
            server: server.clone(),
            protocol: *protocol,
        },
        UsersCmd::Usage(a) => usage(a, now),
    }
}

fn servers(target: &Target) -> Servers {
    if target.all_servers {
        Servers::All
    } else {
        Servers::Named(target.servers.clone())
    }
}

fn wants_qr(command: &Command) -> bool {
    matches!(command, Command::Users(UsersCmd::Link { qr: true, .. }))
}

/// `users link --conf`: the artefacts alone, verbatim.
fn wants_conf(command: &Command) -> bool {
    matches!(command, Command::Users(UsersCmd::Link { conf: true, .. }))
}

/// After an answer is printed: exit 1 if an `Applied` answer has failed hosts, exit 3 if a
/// doctor report is not all well.
pub fn outcome(resp: &AdminResponse) -> Result<(), CliError> {
    match resp {
        AdminResponse::Applied(_) => host_failures(resp),
        AdminResponse::Doctor(report) if !report.all_well() => {
            let count = |l| report.checks.iter().filter(|c| c.level == l).count();
            Err(CliError::ChecksFailed {
                failed: count(CheckLevel::Fail),
                warned: count(CheckLevel::Warn),
                total: report.checks.len(),
            })
        }
        _ => Ok(()),
    }
}

/// After an `Applied` answer is printed: exit 1 if any host reported failures.
pub fn host_failures(resp: &AdminResponse) -> Result<(), CliError> {
    let AdminResponse::Applied(applied) = resp else {
        return Ok(());
    };
    let failed = applied
        .hosts
        .iter()
        .filter(|h| matches!(h.state, HostApplyState::Failed(_)))
        .count();
    if failed == 0 {
        return Ok(());
    }
    Err(CliError::HostsFailed {
        failed,
        total: applied.hosts.len(),
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
