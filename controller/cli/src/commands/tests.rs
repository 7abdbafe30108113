//! Asking the controller: the health requests and `users usage`, and what happens with a
//! controller older than them, against a fake controller on the real transport.

use vpn_shared::proto::admin::{
    AdminRequest, AdminResponse, CheckLevel, DoctorCheck, DoctorReport, ErrorKind, StatusInfo,
    UsageBy, UsageQuery,
};

use super::{ask, legacy, not_served, outcome};
use crate::client::tests::fake_client;
use crate::error::CliError;

fn status_info() -> StatusInfo {
    StatusInfo {
        controller_version: "0.0.9".into(),
        hosts_total: 1,
        hosts_online: 1,
        services: 0,
        users_total: 0,
        users_active: 0,
    }
}

/// A controller built before the health requests existed: it cannot decode them.
fn old_controller(req: &AdminRequest) -> Option<AdminResponse> {
    Some(match req {
        AdminRequest::Status => AdminResponse::Status(status_info()),
        AdminRequest::ServersList => AdminResponse::Servers(vec![]),
        _ => AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "malformed request: Found an enum discriminant that was not recognized".into(),
        },
    })
}

#[tokio::test]
async fn an_older_controller_is_asked_again_with_the_request_it_knows() {
    let (client, server, dir) = fake_client(old_controller).await;
    let resp = ask(&client, &AdminRequest::StatusDetail).await.unwrap();
    assert_eq!(resp, AdminResponse::Status(status_info()));
    let resp = ask(&client, &AdminRequest::ServersListDetail)
        .await
        .unwrap();
    assert_eq!(resp, AdminResponse::Servers(vec![]));
    client.close().await;
    let seen = server.await.unwrap();
    assert_eq!(
        seen,
        vec![
            AdminRequest::StatusDetail,
            AdminRequest::Status,
            AdminRequest::ServersListDetail,
            AdminRequest::ServersList,
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_controller_that_does_not_serve_health_yet_is_asked_as_before() {
    let (client, server, dir) = fake_client(|req| {
        Some(match req {
            AdminRequest::ServersShow { name } => AdminResponse::Error {
                kind: ErrorKind::BadData,
                message: format!("server {name} not found"),
            },
            _ => AdminResponse::Error {
                kind: ErrorKind::BadData,
                message: "this controller does not serve host health yet".into(),
            },
        })
    })
    .await;
    let req = AdminRequest::ServersShowDetail {
        name: "fra-9".into(),
    };
    // The older answer is what the operator gets, refusal included.
    let resp = ask(&client, &req).await.unwrap();
    assert_eq!(
        resp,
        AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "server fra-9 not found".into()
        }
    );
    client.close().await;
    let old = AdminRequest::ServersShow {
        name: "fra-9".into(),
    };
    assert_eq!(server.await.unwrap(), vec![req, old]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_current_controller_is_asked_once_and_its_refusals_stand() {
    let (client, server, dir) = fake_client(|req| {
        Some(match req {
            AdminRequest::ServicesShowDetail { name } => AdminResponse::Error {
                kind: ErrorKind::BadData,
                message: format!("service {name} not found"),
            },
            _ => AdminResponse::Doctor(DoctorReport { checks: vec![] }),
        })
    })
    .await;
    let req = AdminRequest::ServicesShowDetail { name: "ss".into() };
    let resp = ask(&client, &req).await.unwrap();
    assert!(!not_served(&req, &resp), "{resp:?}");
    let doctor = ask(&client, &AdminRequest::Doctor).await.unwrap();
    assert_eq!(
        doctor,
        AdminResponse::Doctor(DoctorReport { checks: vec![] })
    );
    client.close().await;
    assert_eq!(server.await.unwrap(), vec![req, AdminRequest::Doctor]);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn doctor_against_an_older_controller_says_to_upgrade_it() {
    let (client, server, dir) = fake_client(old_controller).await;
    let err = ask(&client, &AdminRequest::Doctor).await.unwrap_err();
    assert!(matches!(err, CliError::Unsupported(_)), "{err:?}");
    assert_eq!(err.exit_code(), 76);
    assert!(err.to_string().contains("upgrade it"), "{err}");
    client.close().await;
    assert_eq!(server.await.unwrap(), vec![AdminRequest::Doctor]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn only_health_requests_have_an_older_form_and_only_bad_data_means_not_served() {
    assert_eq!(
        legacy(&AdminRequest::ServicesShowDetail { name: "ss".into() }),
        Some(AdminRequest::ServicesShow { name: "ss".into() })
    );
    assert_eq!(legacy(&AdminRequest::Doctor), None);
    assert_eq!(legacy(&AdminRequest::UsersList), None);
    let internal = AdminResponse::Error {
        kind: ErrorKind::Internal,
        message: "malformed request: database is locked".into(),
    };
    assert!(!not_served(&AdminRequest::Doctor, &internal));
}

fn check(level: CheckLevel) -> DoctorCheck {
    DoctorCheck {
        server: Some("fra-1".into()),
        check: "resources".into(),
        level,
        detail: "-".into(),
    }
}

#[test]
fn doctor_exits_0_only_when_every_check_is_ok() {
    let report = |levels: &[CheckLevel]| {
        AdminResponse::Doctor(DoctorReport {
            checks: levels.iter().copied().map(check).collect(),
        })
    };
    assert!(outcome(&report(&[CheckLevel::Ok, CheckLevel::Ok])).is_ok());
    let err = outcome(&report(&[CheckLevel::Ok, CheckLevel::Warn])).unwrap_err();
    assert_eq!(err.exit_code(), 3, "a warning is something to fix");
    let err = outcome(&report(&[
        CheckLevel::Fail,
        CheckLevel::Warn,
        CheckLevel::Ok,
    ]))
    .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert_eq!(
        err.to_string(),
        "doctor found problems: 1 failed and 1 warned of 3 checks"
    );
    assert!(outcome(&AdminResponse::Servers(vec![])).is_ok());
}

fn usage_query() -> AdminRequest {
    AdminRequest::UsersUsage(UsageQuery {
        user: Some("alice".into()),
        since: None,
        by: UsageBy::Server,
    })
}

#[tokio::test]
async fn usage_from_a_controller_that_does_not_record_traffic_says_so_and_exits_76() {
    // One predates the request and cannot decode it; one knows it but has no ledger yet.
    let not_yet = |_: &AdminRequest| {
        Some(AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "this controller does not record traffic yet".into(),
        })
    };
    for answer in [old_controller as fn(&AdminRequest) -> _, not_yet] {
        let (client, server, dir) = fake_client(answer).await;
        let err = ask(&client, &usage_query()).await.unwrap_err();
        assert!(matches!(err, CliError::Unsupported(_)), "{err:?}");
        assert_eq!(err.exit_code(), 76, "as for doctor");
        let text = err.to_string();
        assert!(
            text.starts_with("this controller does not record traffic; upgrade it (it answered: "),
            "{text}"
        );
        client.close().await;
        assert_eq!(server.await.unwrap(), vec![usage_query()], "asked once");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn usage_refusals_of_a_current_controller_stand() {
    let (client, server, dir) = fake_client(|_| {
        Some(AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "user alice not found".into(),
        })
    })
    .await;
    let resp = ask(&client, &usage_query()).await.unwrap();
    assert_eq!(
        resp,
        AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "user alice not found".into()
        },
        "rendered later as exit 65"
    );
    client.close().await;
    assert_eq!(server.await.unwrap(), vec![usage_query()]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn only_newer_requests_can_be_not_served() {
    let malformed = AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: "malformed request: unexpected end of input".into(),
    };
    assert!(not_served(&usage_query(), &malformed));
    assert!(not_served(&AdminRequest::Doctor, &malformed));
    assert!(
        !not_served(&AdminRequest::UsersList, &malformed),
        "every controller knows users list: its refusal stands"
    );
    let health = AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: "this controller does not serve host health yet".into(),
    };
    assert!(
        !not_served(&usage_query(), &health),
        "each feature has its own words"
    );
    assert_eq!(legacy(&usage_query()), None);
}
