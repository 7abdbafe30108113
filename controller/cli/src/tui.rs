//! `vpn tui`: the terminal fleet overview (`vpn-tui`) fed by the controller's subscription
//! stream (`vpn_shared::proto::stream`).
//!
//! The UI and this backend only meet through channels: the backend turns the stream into
//! [`Update`]s and runs each [`Command`] as an admin request in a task of its own, so neither
//! a slow controller nor a lost one ever holds up drawing or input. When the stream ends the UI
//! is told (`Disconnected`, with when the next attempt is) and the backend dials again with the
//! agent's jittered backoff; every reconnect starts with a fresh snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use vpn_shared::backoff;
use vpn_shared::context::CliContext;
use vpn_shared::proto::admin::{AdminRequest, AdminResponse};
use vpn_shared::proto::frame;
use vpn_shared::proto::stream::{SnapshotPart, StreamMsg};
use vpn_tui::{Command, FleetEvent, FleetSnapshot, HostRate, Theme, Update};

use crate::client::Client;
use crate::error::CliError;

/// Updates the UI has not drawn yet, at most (the stream waits beyond that; the UI never does).
const UPDATES: usize = 4_096;
/// The longest wait between attempts to reach the controller.
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Runs the TUI until the operator quits.
pub async fn run(ctx: CliContext, path: PathBuf, theme: Theme) -> Result<(), CliError> {
    let (up_tx, up_rx) = mpsc::channel(UPDATES);
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let backend = tokio::spawn(backend(ctx, path, up_tx, cmd_rx));
    let result = vpn_tui::run(up_rx, cmd_tx, theme).await;
    backend.abort();
    result.map_err(|e| CliError::Protocol(format!("the terminal UI failed: {e:#}")))
}

/// Why a connection's stream ended.
enum Ended {
    /// The operator quit.
    Quit,
    /// Dial again after a backoff (`fresh`: at once, the stream only asked for a resubscribe).
    Lost { reason: String, fresh: bool },
    /// The controller cannot serve a subscription: say so and stop trying.
    Unsupported(String),
}

async fn backend(
    ctx: CliContext,
    path: PathBuf,
    up: mpsc::Sender<Update>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
) {
    let mut attempt: u32 = 0;
    loop {
        let ended = match Client::connect(&ctx, &path).await {
            Ok(client) => session(Arc::new(client), &up, &mut cmds).await,
            Err(e) => Ended::Lost {
                reason: e.to_string(),
                fresh: false,
            },
        };
        let reason = match ended {
            Ended::Quit => return,
            Ended::Unsupported(reason) => {
                let _ = up
                    .send(Update::Disconnected {
                        reason,
                        retry_in: None,
                    })
                    .await;
                answer_offline(&mut cmds, &up).await;
                return;
            }
            Ended::Lost { fresh: true, .. } => {
                attempt = 0;
                continue;
            }
            Ended::Lost { reason, .. } => reason,
        };
        let delay = backoff::delay(attempt, RETRY_MAX, backoff::random_unit())
            .max(Duration::from_millis(200));
        attempt = attempt.saturating_add(1);
        let _ = up
            .send(Update::Disconnected {
                reason,
                retry_in: Some(delay),
            })
            .await;
        // Commands sent meanwhile fail at once, with the reason.
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                cmd = cmds.recv() => match cmd {
                    None | Some(Command::Quit) => return,
                    Some(cmd) => refuse(&up, cmd, "not connected to the controller").await,
                },
            }
        }
    }
}

/// After the controller refused subscriptions: commands still get an answer, until quit.
async fn answer_offline(cmds: &mut mpsc::UnboundedReceiver<Command>, up: &mpsc::Sender<Update>) {
    while let Some(cmd) = cmds.recv().await {
        if matches!(cmd, Command::Quit) {
            return;
        }
        refuse(up, cmd, "the controller cannot serve vpn tui").await;
    }
}

/// One connection: the subscription stream in, commands out, until either ends.
async fn session(
    client: Arc<Client>,
    up: &mpsc::Sender<Update>,
    cmds: &mut mpsc::UnboundedReceiver<Command>,
) -> Ended {
    let mut recv = match client.subscribe().await {
        Ok(r) => r,
        Err(e) => {
            return Ended::Lost {
                reason: e.to_string(),
                fresh: false,
            };
        }
    };
    let mut snapshot: Option<FleetSnapshot> = None;
    let mut connected = false;
    loop {
        tokio::select! {
            msg = frame::read_frame::<_, AdminResponse>(&mut recv, frame::MAX_FRAME) => {
                let msg = match msg {
                    Ok(Some(AdminResponse::Stream(m))) => m,
                    Ok(Some(AdminResponse::Error { message, .. })) => {
                        return Ended::Unsupported(format!(
                            "the controller refused the subscription ({message}); upgrade it to use vpn tui"
                        ));
                    }
                    Ok(Some(other)) => {
                        return Ended::Lost { reason: format!("unexpected answer {other:?}"), fresh: false };
                    }
                    Ok(None) => return Ended::Lost { reason: "the controller ended the stream".into(), fresh: false },
                    Err(e) => return Ended::Lost { reason: e.to_string(), fresh: false },
                };
                if !connected {
                    connected = true;
                    if up.send(Update::Connected).await.is_err() {
                        return Ended::Quit;
                    }
                }
                if matches!(msg, StreamMsg::Lagged) {
                    return Ended::Lost { reason: "fell behind the controller".into(), fresh: true };
                }
                for u in updates(msg, &mut snapshot) {
                    if up.send(u).await.is_err() {
                        return Ended::Quit;
                    }
                }
            }
            cmd = cmds.recv() => match cmd {
                None | Some(Command::Quit) => {
                    client_close(client).await;
                    return Ended::Quit;
                }
                Some(cmd) => {
                    let (client, up) = (client.clone(), up.clone());
                    tokio::spawn(async move { execute(&client, &up, cmd).await });
                }
            },
        }
    }
}

async fn client_close(client: Arc<Client>) {
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
}

/// The UI's updates for one stream message: a snapshot is gathered until its last part.
fn updates(msg: StreamMsg, snapshot: &mut Option<FleetSnapshot>) -> Vec<Update> {
    match msg {
        StreamMsg::Snapshot(SnapshotPart {
            hosts,
            services,
            users,
            events,
            last,
        }) => {
            let s = snapshot.get_or_insert_with(FleetSnapshot::default);
            s.hosts.extend(hosts);
            s.services.extend(services);
            s.users.extend(users);
            s.events.extend(events.into_iter().map(|e| FleetEvent {
                host: e.host,
                event: e.event,
            }));
            match (last, snapshot.take()) {
                (true, Some(s)) => vec![Update::Snapshot(s)],
                (false, s) => {
                    *snapshot = s;
                    Vec::new()
                }
                (true, None) => Vec::new(),
            }
        }
        StreamMsg::HostChanged(h) => vec![Update::HostChanged(h)],
        StreamMsg::HostRemoved(n) => vec![Update::HostRemoved(n)],
        StreamMsg::ServiceChanged(s) => vec![Update::ServiceChanged(s)],
        StreamMsg::ServiceRemoved(n) => vec![Update::ServiceRemoved(n)],
        StreamMsg::UserChanged(u) => vec![Update::UserChanged(u)],
        StreamMsg::UserRemoved(n) => vec![Update::UserRemoved(n)],
        StreamMsg::Event(e) => vec![Update::Event(FleetEvent {
            host: e.host,
            event: e.event,
        })],
        StreamMsg::Rates(rates) => vec![Update::Rates(
            rates
                .into_iter()
                .map(|r| HostRate {
                    host: r.host,
                    rx_bps: r.rx_bps,
                    tx_bps: r.tx_bps,
                    cpu: r.cpu_permille.map(|p| p as f32 / 10.0),
                    mem: r.mem_permille.map(|p| p as f32 / 10.0),
                })
                .collect(),
        )],
        StreamMsg::Lagged => Vec::new(),
    }
}

/// The admin request a command is, and how its answer is worded.
fn request(cmd: &Command) -> Option<(u64, AdminRequest)> {
    Some(match cmd.clone() {
        Command::AddUser { id, add, quota } => (id, AdminRequest::UsersAddWith { add, quota }),
        Command::EditUser { id, edit, quota } => (id, AdminRequest::UsersEditWith { edit, quota }),
        Command::SuspendUser { id, name } => (id, AdminRequest::UsersSuspend { name, wait: true }),
        Command::ResumeUser { id, name } => (id, AdminRequest::UsersResume { name, wait: true }),
        Command::DeleteUser { id, name } => (id, AdminRequest::UsersRemove { name, wait: true }),
        Command::FetchLinks { id, name } => (
            id,
            AdminRequest::UsersLink {
                name,
                server: None,
                protocol: None,
            },
        ),
        Command::Quit => return None,
    })
}

/// Runs one command and sends its answer to the UI.
async fn execute(client: &Client, up: &mpsc::Sender<Update>, cmd: Command) {
    let Some((id, req)) = request(&cmd) else {
        return;
    };
    let answer = client.request(&req).await;
    let update = match (&cmd, answer) {
        (Command::FetchLinks { name, .. }, answer) => Update::Links {
            id,
            user: name.clone(),
            result: match answer {
                Ok(AdminResponse::Links(links)) => Ok(links),
                Ok(AdminResponse::Error { message, .. }) => Err(message),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            },
        },
        (_, answer) => Update::CommandResult {
            id,
            result: match answer {
                Ok(AdminResponse::Applied(a)) => Ok(a.summary),
                Ok(AdminResponse::Error { message, .. }) => Err(message),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            },
        },
    };
    let _ = up.send(update).await;
}

/// Answers a command that cannot run now with `why`.
async fn refuse(up: &mpsc::Sender<Update>, cmd: Command, why: &str) {
    let update = match cmd {
        Command::FetchLinks { id, name } => Update::Links {
            id,
            user: name,
            result: Err(why.to_owned()),
        },
        other => match request(&other) {
            Some((id, _)) => Update::CommandResult {
                id,
                result: Err(why.to_owned()),
            },
            None => return,
        },
    };
    let _ = up.send(update).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpn_shared::proto::admin::HostEvent;
    use vpn_shared::proto::stream::{HostRateInfo, StreamEvent};

    #[test]
    fn a_snapshot_in_parts_reaches_the_ui_once_whole() {
        let mut s = None;
        let part = |last| {
            StreamMsg::Snapshot(SnapshotPart {
                events: vec![StreamEvent {
                    host: "h".into(),
                    event: HostEvent {
                        at: 1,
                        kind: "online".into(),
                        resource: None,
                        message: "m".into(),
                    },
                }],
                last,
                ..SnapshotPart::default()
            })
        };
        assert!(updates(part(false), &mut s).is_empty());
        let got = updates(part(true), &mut s);
        let [Update::Snapshot(snap)] = got.as_slice() else {
            panic!("one snapshot expected: {got:?}");
        };
        assert_eq!(snap.events.len(), 2);
        assert!(s.is_none(), "the next snapshot starts empty");
    }

    #[test]
    fn rates_keep_what_agents_do_not_report_unknown() {
        let got = updates(
            StreamMsg::Rates(vec![HostRateInfo {
                host: "h".into(),
                rx_bps: 8,
                tx_bps: 16,
                cpu_permille: None,
                mem_permille: Some(125),
            }]),
            &mut None,
        );
        let [Update::Rates(r)] = got.as_slice() else {
            panic!("rates expected");
        };
        assert_eq!(r[0].cpu, None);
        assert_eq!(r[0].mem, Some(12.5));
    }
}
