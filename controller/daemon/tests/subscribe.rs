//! The fleet subscription behind `vpn tui` (SPEC §2.7), against a real controller and a test
//! agent speaking the real protocol: a snapshot first, then what changes — a user added and
//! removed, a host coming online with its event, rates every second — and a subscriber that
//! stops reading is dropped without holding up anyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{AgentSession, TestController, add_user, applied, bounded};
use vpn_shared::proto::admin::{AdminRequest, AdminResponse, HostState};
use vpn_shared::proto::frame::{MAX_FRAME, read_frame, write_frame};
use vpn_shared::proto::stream::{SnapshotPart, StreamMsg};

/// Opens a subscription on `admin`.
async fn subscribe(admin: &quinn::Connection) -> quinn::RecvStream {
    let (mut send, recv) = admin.open_bi().await.unwrap();
    write_frame(&mut send, &AdminRequest::Subscribe)
        .await
        .unwrap();
    send.finish().unwrap();
    recv
}

async fn next(recv: &mut quinn::RecvStream) -> StreamMsg {
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        read_frame::<_, AdminResponse>(recv, MAX_FRAME).await
    })
    .await
    .expect("a stream message within 10 s");
    match got {
        Ok(Some(AdminResponse::Stream(m))) => m,
        other => panic!("expected a stream message, got {other:?}"),
    }
}

/// Reads until `want` accepts a message (at most 10 s); returns the messages read.
async fn until(
    recv: &mut quinn::RecvStream,
    what: &str,
    mut want: impl FnMut(&StreamMsg) -> bool,
) -> Vec<StreamMsg> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 10 s: {what}; seen {seen:?}"
        );
        let m = next(recv).await;
        let done = want(&m);
        seen.push(m);
        if done {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_a_snapshot_then_changes_events_and_rates() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let edge1 = tc.enroll_agent(&admin, "edge-1").await;
        tc.add_server(&admin, "edge-2", 600).await; // never joins
        applied(&admin, &add_user("alice", false)).await;

        let mut sub = subscribe(&admin).await;
        let StreamMsg::Snapshot(SnapshotPart {
            hosts, users, last, ..
        }) = next(&mut sub).await
        else {
            panic!("the stream starts with a snapshot");
        };
        assert!(last, "a small fleet fits one part");
        let mut names: Vec<_> = hosts.iter().map(|h| h.server.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["edge-1", "edge-2"]);
        assert!(hosts.iter().all(|h| h.state != HostState::Online));
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].user.name, "alice");

        // A user added elsewhere arrives, then goes.
        applied(&admin, &add_user("bob", false)).await;
        until(
            &mut sub,
            "bob added",
            |m| matches!(m, StreamMsg::UserChanged(u) if u.user.name == "bob"),
        )
        .await;
        applied(
            &admin,
            &AdminRequest::UsersRemove {
                name: "bob".into(),
                wait: false,
            },
        )
        .await;
        until(
            &mut sub,
            "bob removed",
            |m| matches!(m, StreamMsg::UserRemoved(n) if n == "bob"),
        )
        .await;

        // The agent connects: its host turns online, and its `online` event follows.
        let (_session, _state, _digest) = AgentSession::start(&tc, &edge1).await.unwrap();
        let seen = until(
            &mut sub,
            "edge-1 online and its event",
            |m| matches!(m, StreamMsg::Event(e) if e.host == "edge-1" && e.event.kind == "online"),
        )
        .await;
        assert!(
            seen.iter().any(|m| matches!(m, StreamMsg::HostChanged(h)
                if h.server.name == "edge-1" && h.state == HostState::Online)),
            "{seen:?}"
        );

        // Rates name every online host each second (not the one never enrolled); no traffic
        // reported is zero, what agents do not report stays unknown.
        let seen = until(&mut sub, "rates", |m| matches!(m, StreamMsg::Rates(_))).await;
        let Some(StreamMsg::Rates(rates)) = seen.last() else {
            unreachable!()
        };
        let named: Vec<_> = rates.iter().map(|r| r.host.as_str()).collect();
        assert_eq!(named, ["edge-1"]);
        assert!(
            rates
                .iter()
                .all(|r| r.rx_bps == 0 && r.cpu_permille.is_none())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_holds_up_nobody() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        // Users with long notes, so the stream carries something.
        for i in 0..40 {
            let req = AdminRequest::UsersAdd(vpn_shared::proto::admin::AddUser {
                note: Some("n".repeat(1_000)),
                ..match add_user(&format!("u{i:02}"), false) {
                    AdminRequest::UsersAdd(a) => a,
                    _ => unreachable!(),
                }
            });
            applied(&admin, &req).await;
        }
        // Subscribed and never read again: its window fills, its writes stall.
        let _stalled = subscribe(&admin).await;
        // Changes go on regardless (a change that waited on the stalled stream would never
        // finish and the test would run out of its budget), and a subscriber that reads sees
        // them all.
        let mut reader = subscribe(&admin).await;
        for i in 0..40 {
            let edit = AdminRequest::UsersEdit(vpn_shared::proto::admin::EditUser {
                name: format!("u{i:02}"),
                email: None,
                note: Some("m".repeat(1_000)),
                bandwidth: None,
                wait: false,
            });
            applied(&admin, &edit).await;
        }
        let mut edited = std::collections::BTreeSet::new();
        // Each edit is in the snapshot (made after it) or comes as a change.
        until(&mut reader, "every edit", |m| {
            let users = match m {
                StreamMsg::Snapshot(p) => p.users.clone(),
                StreamMsg::UserChanged(u) => vec![u.clone()],
                _ => Vec::new(),
            };
            for u in users {
                if u.user.note.as_deref().is_some_and(|n| n.starts_with('m')) {
                    edited.insert(u.user.name);
                }
            }
            edited.len() == 40
        })
        .await;
    })
    .await;
}
