//! Security stories at the protocol level (SPEC §4 item 4): a real controller on 127.0.0.1, and
//! peers holding the wrong certificate, an expired one, a revoked identity, someone else's host
//! id, or a spent join token. Every refusal must also be counted in the controller's metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    AgentIdentity, AgentSession, TestController, add_user_on, admin_request, applied,
    assert_closed_with, bounded, close_code, enroll_request, hello,
};
use vpn_controller::config::FileConfig;
use vpn_shared::pki::{Ca, Identity, generate_csr};
use vpn_shared::proto::admin::{AdminRequest, AdminResponse, Servers};
use vpn_shared::proto::frame::write_frame;
use vpn_shared::proto::{
    ALPN_ADMIN, ALPN_AGENT, ControllerMsg, EnrollRequest, EnrollResponse, close,
};

const HOUR: Duration = Duration::from_secs(3600);

/// Tries a certificate the controller must reject in the TLS handshake on the admin ALPN: if the
/// client's half of the handshake completes (TLS 1.3 lets it finish before the server has judged
/// its certificate), a request must still never be answered.
async fn admin_is_refused_in_handshake(
    tc: &TestController,
    config: quinn::ClientConfig,
    what: &str,
) {
    let Ok(conn) = tc.connect(config).await else {
        return;
    };
    let answer = admin_request(&conn, &AdminRequest::ServersList).await;
    assert!(
        answer.is_err(),
        "{what}: the controller answered {answer:?}"
    );
    let e = common::closed(&conn).await;
    assert_eq!(
        close_code(&e),
        None,
        "{what}: closed by a handler ({e:?}), not by the TLS handshake"
    );
}

/// The same on the agent ALPN: the session must never be welcomed nor see any state.
async fn agent_is_refused_in_handshake(tc: &TestController, identity: &AgentIdentity, what: &str) {
    let Ok(mut session) = AgentSession::open(tc, identity).await else {
        return;
    };
    let _ = session.send(&hello(&identity.host_id)).await;
    let seen = session.drain().await;
    assert!(seen.is_empty(), "{what}: the controller sent {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_in_the_handshake() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;

        // An attacker's CA mints an admin and a copy of a real host's identity.
        let rogue = Ca::generate("vpn-fleet controller CA").unwrap();
        let (cert, key) = rogue
            .issue(&Identity::Admin("admin".into()), &[], HOUR)
            .unwrap();
        let config = tc.client_config(&cert.cert_pem, &key, ALPN_ADMIN);
        admin_is_refused_in_handshake(&tc, config, "rogue admin").await;
        tc.expect_refusals("handshake", 1).await;

        let (agent_key, csr) = generate_csr().unwrap();
        let forged = rogue
            .sign_csr(&csr, &Identity::Agent(host.host_id.clone()), HOUR)
            .unwrap();
        let forged = AgentIdentity {
            cert_pem: forged.cert_pem,
            key_pem: agent_key,
            ..host.clone()
        };
        agent_is_refused_in_handshake(&tc, &forged, "rogue agent").await;
        tc.expect_refusals("handshake", 2).await;

        // Refused before any handler ran: no role check was even reached.
        let counted = tc.ctl.metrics.refusals();
        assert_eq!(counted.get("admin_without_admin_certificate"), None);
        assert_eq!(counted.get("agent_without_agent_certificate"), None);
        // The genuine host is unaffected.
        let (_session, _, _) = AgentSession::start(&tc, &host).await.unwrap();
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_from_the_real_ca_is_refused() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;

        let ca = tc.load_ca();
        let (cert, key) = ca
            .issue(&Identity::Admin("admin".into()), &[], Duration::ZERO)
            .unwrap();
        let (agent_key, csr) = generate_csr().unwrap();
        let stale = ca
            .sign_csr(&csr, &Identity::Agent(host.host_id.clone()), Duration::ZERO)
            .unwrap();
        let stale = AgentIdentity {
            cert_pem: stale.cert_pem,
            key_pem: agent_key,
            ..host.clone()
        };
        tokio::time::sleep(Duration::from_secs(2)).await;

        let config = tc.client_config(&cert.cert_pem, &key, ALPN_ADMIN);
        admin_is_refused_in_handshake(&tc, config, "expired admin").await;
        tc.expect_refusals("handshake", 1).await;
        agent_is_refused_in_handshake(&tc, &stale, "expired agent").await;
        tc.expect_refusals("handshake", 2).await;

        // The same identities with valid certificates still work.
        let answer = admin_request(&admin, &AdminRequest::ServersList).await;
        assert!(
            matches!(answer, Ok(AdminResponse::Servers(_))),
            "{answer:?}"
        );
        let (_session, _, _) = AgentSession::start(&tc, &host).await.unwrap();
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_enrolls_one_host_and_a_replay_is_refused_as_reuse() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let (_, join) = tc.add_server(&admin, "edge-1", 600).await;
        let (first, _) = tc.enroll_with(&join).await;
        assert!(
            matches!(first, EnrollResponse::Accepted { .. }),
            "{first:?}"
        );

        let (replay, _) = tc.enroll_with(&join).await;
        let EnrollResponse::Refused { reason } = replay else {
            panic!("a replayed token enrolled again: {replay:?}");
        };
        assert!(reason.contains("already used"), "reason: {reason}");
        tc.expect_refusals("join_token_used", 1).await;
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_join_token_is_refused_as_expired() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let (_, join) = tc.add_server(&admin, "edge-1", 1).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (answer, _) = tc.enroll_with(&join).await;
        let EnrollResponse::Refused { reason } = answer else {
            panic!("an expired token enrolled: {answer:?}");
        };
        assert!(reason.contains("expired"), "reason: {reason}");
        tc.expect_refusals("join_token_expired", 1).await;
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_join_token_is_refused_as_unknown() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        // A well-formed join string for this controller, with a token it never issued.
        let (_, mut join) = tc.add_server(&admin, "edge-1", 600).await;
        join.token = "A".repeat(43);
        let (answer, _) = tc.enroll_with(&join).await;
        let EnrollResponse::Refused { reason } = answer else {
            panic!("an unknown token enrolled: {answer:?}");
        };
        assert!(reason.contains("unknown"), "reason: {reason}");
        tc.expect_refusals("join_token_unknown", 1).await;
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_csr_is_refused_without_burning_the_join_token() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let (added, join) = tc.add_server(&admin, "edge-1", 600).await;
        let bad_csrs = [
            String::new(),
            "-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgY3Ny\n-----END CERTIFICATE REQUEST-----\n"
                .to_string(),
            // A certificate where a CSR belongs.
            tc.admin_cert.clone(),
        ];
        for (i, csr) in bad_csrs.iter().enumerate() {
            let answer = tc
                .enroll_request(&join.ca_sha256, &enroll_request(&join.token, csr))
                .await
                .unwrap();
            let EnrollResponse::Refused { reason } = answer else {
                panic!("malformed CSR #{i} was signed: {answer:?}");
            };
            assert!(
                reason.contains("certificate signing request"),
                "reason: {reason}"
            );
        }
        tc.expect_refusals("enroll_bad_csr", bad_csrs.len() as u64)
            .await;
        assert_eq!(tc.refusals("join_token"), 0, "the token was looked at");

        let (answer, _) = tc.enroll_with(&join).await;
        let EnrollResponse::Accepted { host_id, .. } = answer else {
            panic!("the token was burned by a malformed request: {answer:?}");
        };
        assert_eq!(host_id, added.host_id);
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_is_cut_off_at_once_and_cannot_come_back() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;
        let (mut session, _, _) = AgentSession::start(&tc, &host).await.unwrap();

        applied(
            &admin,
            &AdminRequest::ServersRemove {
                name: "edge-1".into(),
            },
        )
        .await;
        let live_saw = session.drain().await;
        assert_closed_with(
            &session.conn,
            close::REFUSED,
            "live session of a removed host",
        )
        .await;

        // The certificate is still within its lifetime, but names a revoked host.
        let mut again = AgentSession::open(&tc, &host).await.unwrap();
        again.send(&hello(&host.host_id)).await.unwrap();
        let seen = again.drain().await;
        let [ControllerMsg::Refused { reason }] = seen.as_slice() else {
            panic!("a removed host reconnected and got {seen:?}");
        };
        assert!(reason.contains("removed"), "reason: {reason}");
        assert_closed_with(&again.conn, close::REFUSED, "reconnect of a removed host").await;
        tc.expect_refusals("revoked", 1).await;

        // Checked last so the rest of the story is verified even while this fails.
        assert!(
            matches!(live_saw.as_slice(), [ControllerMsg::Refused { .. }]),
            "the live session of a removed host should be told why before the close, got \
             {live_saw:?} (the Refused frame is lost when the connection is closed right after it \
             is written)"
        );
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_read_another_hosts_state() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let a = tc.enroll_agent(&admin, "edge-a").await;
        let b = tc.enroll_agent(&admin, "edge-b").await;
        applied(&admin, &common::deploy_shadowsocks(20_000)).await;
        let only_on_b = add_user_on("bob-secret", Servers::Named(vec!["edge-b".into()]), false);
        applied(&admin, &only_on_b).await;

        // Host A's certificate, host B's id.
        let mut session = AgentSession::open(&tc, &a).await.unwrap();
        session.send(&hello(&b.host_id)).await.unwrap();
        let seen = session.drain().await;
        let [ControllerMsg::Refused { reason }] = seen.as_slice() else {
            panic!("asking for another host's state gave {seen:?}");
        };
        assert!(reason.contains(&b.host_id), "reason: {reason}");
        assert_closed_with(
            &session.conn,
            close::REFUSED,
            "agent asking for another host",
        )
        .await;
        tc.expect_refusals("other_host_state", 1).await;

        // Host A asking for its own state gets it, without B's user.
        let (_session, state, _) = AgentSession::start(&tc, &a).await.unwrap();
        assert!(state.services.contains_key("shadowsocks"), "{state:?}");
        assert!(!state.users.contains_key("bob-secret"), "{state:?}");
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_only_good_for_its_own_role() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let host = tc.enroll_agent(&admin, "edge-1").await;

        // An agent's certificate on the admin ALPN: no request is answered.
        let config = tc.client_config(&host.cert_pem, &host.key_pem, ALPN_ADMIN);
        let conn = tc.connect(config).await.unwrap();
        let answer = admin_request(&conn, &AdminRequest::ServersList).await;
        assert!(
            answer.is_err(),
            "an agent was answered as admin: {answer:?}"
        );
        assert_closed_with(&conn, close::REFUSED, "agent certificate on the admin ALPN").await;
        tc.expect_refusals("admin_without_admin_certificate", 1)
            .await;

        // The admin's certificate on the agent ALPN: no state.
        let config = tc.client_config(&tc.admin_cert, &tc.admin_key, ALPN_AGENT);
        let conn = tc.connect(config).await.unwrap();
        // The controller may close before the stream opens; either way nothing is served.
        if let Ok(mut session) = AgentSession::on(conn.clone()).await {
            let _ = session.send(&hello(&host.host_id)).await;
            let seen = session.drain().await;
            assert!(seen.is_empty(), "an admin was served as agent: {seen:?}");
        }
        assert_closed_with(&conn, close::REFUSED, "admin certificate on the agent ALPN").await;
        tc.expect_refusals("agent_without_agent_certificate", 1)
            .await;

        // No certificate at all (allowed by TLS only for enrollment) on either ALPN.
        let conn = tc.connect(tc.anonymous_config(ALPN_ADMIN)).await.unwrap();
        let answer = admin_request(&conn, &AdminRequest::ServersList).await;
        assert!(
            answer.is_err(),
            "an anonymous peer was answered: {answer:?}"
        );
        assert_closed_with(&conn, close::REFUSED, "no certificate on the admin ALPN").await;
        tc.expect_refusals("admin_without_admin_certificate", 2)
            .await;
        let conn = tc.connect(tc.anonymous_config(ALPN_AGENT)).await.unwrap();
        assert_closed_with(&conn, close::REFUSED, "no certificate on the agent ALPN").await;
        tc.expect_refusals("agent_without_agent_certificate", 2)
            .await;
        tc.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_pins_the_ca_so_a_wrong_fingerprint_never_sees_the_token() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let (added, join) = tc.add_server(&admin, "edge-1", 600).await;

        // A join string pinning some other CA: the agent must not trust this controller.
        let (_, csr) = generate_csr().unwrap();
        let other_ca = Ca::generate("someone else's CA").unwrap().fingerprint();
        assert_ne!(other_ca, join.ca_sha256);
        let answer = tc
            .enroll_request(&other_ca, &enroll_request(&join.token, &csr))
            .await;
        let err = answer.expect_err("enrolled with a controller whose CA was not pinned");
        assert!(
            format!("{err:#}").contains("pinned fingerprint"),
            "the handshake should fail on the pin, got: {err:#}"
        );
        // The controller saw a failed handshake, never a request: the token is intact.
        tc.expect_refusals("handshake", 1).await;
        assert_eq!(tc.refusals("join_token"), 0);
        let (answer, _) = tc.enroll_with(&join).await;
        let EnrollResponse::Accepted { host_id, .. } = answer else {
            panic!("the token did not survive the pinned-out attempt: {answer:?}");
        };
        assert_eq!(host_id, added.host_id);
        tc.stop().await;
    })
    .await;
}

/// Sends an enrollment request and finishes the stream without ever reading the answer, as a
/// host whose connection dropped right after sending would.
async fn enroll_and_walk_away(
    tc: &TestController,
    host: &str,
    ca_sha256: &str,
    req: &EnrollRequest,
) {
    let config = vpn_shared::transport::enroll_client_config(ca_sha256).unwrap();
    let conn = tc.connect(config).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    write_frame(&mut send, req).await.unwrap();
    send.finish().unwrap();
    // Wait until the controller has enrolled the host (and so sent its answer), then vanish.
    let deadline = tokio::time::Instant::now() + common::STEP;
    let enrolled =
        |h: Option<vpn_controller::store::HostRow>| h.is_some_and(|h| h.enrolled_at.is_some());
    while !enrolled(tc.ctl.store.host_by_name(host).await.unwrap()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host} not enrolled in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conn.close(0u32.into(), b"gone");
}

/// The answer to an enrollment is lost. The host asks again with the same token and the same
/// key within the token's lifetime and receives the same certificate; a different key is
/// refused with a reason that says how to get a new token. The host is never "enrolled"
/// without a certificate on record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_enrollment_answer_can_be_fetched_again_with_the_same_key() {
    bounded(async {
        let tc = TestController::start().await;
        let admin = tc.admin().await;
        let (added, join) = tc.add_server(&admin, "edge-1", 600).await;
        let (_key, csr) = generate_csr().unwrap();
        let req = enroll_request(&join.token, &csr);
        enroll_and_walk_away(&tc, "edge-1", &join.ca_sha256, &req).await;
        let host = tc.ctl.store.host(&added.host_id).await.unwrap().unwrap();
        assert_eq!(
            host.enrolled_at.is_some(),
            host.cert_serial.is_some(),
            "enrolled and certificate are recorded together: {host:?}"
        );

        let mut certs = Vec::new();
        for attempt in 0..2 {
            let answer = tc.enroll_request(&join.ca_sha256, &req).await.unwrap();
            let EnrollResponse::Accepted { host_id, cert_pem, .. } = answer else {
                panic!("retry {attempt} with the same key was not answered with a certificate: {answer:?}");
            };
            assert_eq!(host_id, added.host_id);
            certs.push(cert_pem);
        }
        assert_eq!(certs[0], certs[1], "a retry gets the certificate already issued");
        let host = tc.ctl.store.host(&added.host_id).await.unwrap().unwrap();
        assert!(host.enrolled_at.is_some() && host.cert_serial.is_some(), "{host:?}");

        // Someone else with the spent token (another key) gets nothing, and is told what to do.
        let (_other_key, other_csr) = generate_csr().unwrap();
        let answer = tc
            .enroll_request(&join.ca_sha256, &enroll_request(&join.token, &other_csr))
            .await
            .unwrap();
        let EnrollResponse::Refused { reason } = answer else {
            panic!("a spent token enrolled another key: {answer:?}");
        };
        assert!(
            reason.contains("already used") && reason.contains("servers add"),
            "reason: {reason}"
        );
        tc.expect_refusals("join_token_used", 1).await;
        tc.stop().await;
    })
    .await;
}

/// Opens an enrollment connection without a certificate and sends 2 of the 4 length bytes,
/// then nothing: the cheapest way to hold a connection open.
/// The send half is handed back so the caller keeps it: dropping it would finish the stream.
async fn half_a_length(
    tc: &TestController,
    ca_sha256: &str,
) -> Option<(quinn::Connection, quinn::SendStream)> {
    let config = vpn_shared::transport::enroll_client_config(ca_sha256).unwrap();
    let conn = tc.connect(config).await.ok()?;
    let (mut send, _recv) = conn.open_bi().await.ok()?;
    send.write_all(&[0, 0]).await.ok()?;
    Some((conn, send))
}

/// 20 peers that each sent 2 of the 4 length bytes and then nothing: every one is closed at the
/// enrollment deadline, though the server's keep-alives would keep them open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_enrollment_connections_are_closed_at_the_deadline() {
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            enroll_timeout: Some("1s".into()),
            enroll_max_per_address: Some(32),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let (_, join) = tc.add_server(&admin, "edge-1", 600).await;
        let started = tokio::time::Instant::now();
        let mut conns = Vec::new();
        for _ in 0..20 {
            conns.push(
                half_a_length(&tc, &join.ca_sha256)
                    .await
                    .expect("connection"),
            );
        }
        for (i, (conn, _send)) in conns.iter().enumerate() {
            assert_closed_with(conn, close::PROTOCOL, &format!("silent enrollment {i}")).await;
        }
        // Closed by the deadline, not by QUIC's idle timeout (15 s).
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        tc.expect_refusals("enroll_timeout", 20).await;
        // The token was never touched and still enrolls.
        let (answer, _) = tc.enroll_with(&join).await;
        assert!(
            matches!(answer, EnrollResponse::Accepted { .. }),
            "{answer:?}"
        );
        tc.stop().await;
    })
    .await;
}

/// Connections without a certificate are capped per source address (and in all): past the
/// cap they are refused at once; once the held ones end, enrollment works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_connections_are_capped_per_address() {
    const CAP: usize = 3;
    bounded(async {
        let tc = TestController::start_with(FileConfig {
            enroll_timeout: Some("3s".into()),
            enroll_max_per_address: Some(CAP),
            ..Default::default()
        })
        .await;
        let admin = tc.admin().await;
        let (_, join) = tc.add_server(&admin, "edge-1", 600).await;
        let mut held = Vec::new();
        for _ in 0..CAP {
            held.push(
                half_a_length(&tc, &join.ca_sha256)
                    .await
                    .expect("connection"),
            );
        }
        // Until the controller has admitted all held ones, an extra one may be admitted too
        // (and held until the deadline); so try until one is refused.
        let deadline = tokio::time::Instant::now() + common::STEP;
        loop {
            let extra = half_a_length(&tc, &join.ca_sha256).await;
            if let Some((conn, _send)) = extra {
                let e = common::closed(&conn).await;
                if close_code(&e) == Some(close::REFUSED) {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a connection past the cap of {CAP} was not refused"
            );
        }
        tc.expect_refusals("enroll_busy", 1).await;
        for (conn, _send) in &held {
            assert!(
                conn.close_reason().is_none(),
                "a held connection was closed early"
            );
        }
        // The held ones end (at the deadline); then a genuine join gets in.
        for (i, (conn, _send)) in held.iter().enumerate() {
            assert_closed_with(conn, close::PROTOCOL, &format!("held {i}")).await;
        }
        let (answer, _) = tc.enroll_with(&join).await;
        assert!(
            matches!(answer, EnrollResponse::Accepted { .. }),
            "{answer:?}"
        );
        tc.stop().await;
    })
    .await;
}
