//! Asking the controller: the health requests, `users usage` and the quota requests, and what
//! happens with a controller older than them, against a fake controller on the real transport.

use vpn_shared::proto::admin::{
    AddUser, AdminRequest, AdminResponse, CheckLevel, DoctorCheck, DoctorReport, EditUser,
    ErrorKind, Quota, QuotaEdit, Servers, StatusInfo, UsageBy, UsageQuery,
};

use super::{ask, in_chunks, legacy, not_served, outcome};
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

/// What one CLI connection to a fake controller answering `answer` got for each of `asked`,
/// and every request that controller saw (retries with an older form included).
async fn exchange(
    answer: fn(&AdminRequest) -> Option<AdminResponse>,
    asked: &[AdminRequest],
) -> (Vec<Result<AdminResponse, CliError>>, Vec<AdminRequest>) {
    let (client, server, dir) = fake_client(answer).await;
    let mut got = Vec::with_capacity(asked.len());
    for req in asked {
        got.push(ask(&client, req).await);
    }
    client.close().await;
    let seen = server.await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
    (got, seen)
}

#[tokio::test]
async fn an_older_controller_is_asked_again_with_the_request_it_knows() {
    let asked = [AdminRequest::StatusDetail, AdminRequest::ServersListDetail];
    let (got, seen) = exchange(old_controller, &asked).await;
    assert_eq!(
        got[0].as_ref().unwrap(),
        &AdminResponse::Status(status_info())
    );
    assert_eq!(got[1].as_ref().unwrap(), &AdminResponse::Servers(vec![]));
    assert_eq!(
        seen,
        vec![
            AdminRequest::StatusDetail,
            AdminRequest::Status,
            AdminRequest::ServersListDetail,
            AdminRequest::ServersList,
        ]
    );
}

#[tokio::test]
async fn a_controller_that_does_not_serve_health_yet_is_asked_as_before() {
    let answer = |req: &AdminRequest| {
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
    };
    let req = AdminRequest::ServersShowDetail {
        name: "fra-9".into(),
    };
    let (got, seen) = exchange(answer, std::slice::from_ref(&req)).await;
    // The older answer is what the operator gets, refusal included.
    assert_eq!(
        got[0].as_ref().unwrap(),
        &AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "server fra-9 not found".into()
        }
    );
    let old = AdminRequest::ServersShow {
        name: "fra-9".into(),
    };
    assert_eq!(seen, vec![req, old]);
}

#[tokio::test]
async fn a_current_controller_is_asked_once_and_its_refusals_stand() {
    let answer = |req: &AdminRequest| {
        Some(match req {
            AdminRequest::ServicesShowDetail { name } => AdminResponse::Error {
                kind: ErrorKind::BadData,
                message: format!("service {name} not found"),
            },
            _ => AdminResponse::Doctor(DoctorReport { checks: vec![] }),
        })
    };
    let req = AdminRequest::ServicesShowDetail { name: "ss".into() };
    let asked = [req.clone(), AdminRequest::Doctor];
    let (got, seen) = exchange(answer, &asked).await;
    let resp = got[0].as_ref().unwrap();
    assert!(!not_served(&req, resp), "{resp:?}");
    assert_eq!(
        got[1].as_ref().unwrap(),
        &AdminResponse::Doctor(DoctorReport { checks: vec![] })
    );
    assert_eq!(seen, asked);
}

#[tokio::test]
async fn doctor_against_an_older_controller_says_to_upgrade_it() {
    let (mut got, seen) = exchange(old_controller, &[AdminRequest::Doctor]).await;
    let err = got.remove(0).unwrap_err();
    assert!(matches!(err, CliError::Unsupported(_)), "{err:?}");
    assert_eq!(err.exit_code(), 76);
    assert!(err.to_string().contains("upgrade it"), "{err}");
    assert_eq!(seen, vec![AdminRequest::Doctor]);
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
        let (mut got, seen) = exchange(answer, &[usage_query()]).await;
        let err = got.remove(0).unwrap_err();
        assert!(matches!(err, CliError::Unsupported(_)), "{err:?}");
        assert_eq!(err.exit_code(), 76, "as for doctor");
        let text = err.to_string();
        assert!(
            text.starts_with("this controller does not record traffic; upgrade it (it answered: "),
            "{text}"
        );
        assert_eq!(seen, vec![usage_query()], "asked once");
    }
}

#[tokio::test]
async fn usage_refusals_of_a_current_controller_stand() {
    let answer = |_: &AdminRequest| {
        Some(AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "user alice not found".into(),
        })
    };
    let (got, seen) = exchange(answer, &[usage_query()]).await;
    assert_eq!(
        got[0].as_ref().unwrap(),
        &AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "user alice not found".into()
        },
        "rendered later as exit 65"
    );
    assert_eq!(seen, vec![usage_query()]);
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

fn add_with_limit() -> AdminRequest {
    AdminRequest::UsersAddWith {
        add: AddUser {
            name: "alice".into(),
            email: None,
            note: None,
            protocols: None,
            servers: Servers::All,
            bandwidth: Default::default(),
            wait: true,
        },
        quota: Quota {
            data_limit: Some(1 << 30),
            ..Quota::default()
        },
    }
}

fn edit_expiry() -> AdminRequest {
    AdminRequest::UsersEditWith {
        edit: EditUser {
            name: "alice".into(),
            email: None,
            note: None,
            bandwidth: None,
            wait: true,
        },
        quota: QuotaEdit {
            expires: Some(None),
            ..QuotaEdit::default()
        },
    }
}

/// A controller that has the quota requests but not the feature (today's stub answer).
fn quotas_not_yet(_: &AdminRequest) -> Option<AdminResponse> {
    Some(AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: "quotas are not supported by this controller yet".into(),
    })
}

#[tokio::test]
async fn quota_flags_against_a_controller_without_quotas_say_it_is_too_old_and_exit_76() {
    for answer in [old_controller as fn(&AdminRequest) -> _, quotas_not_yet] {
        for req in [add_with_limit(), edit_expiry()] {
            let (mut got, seen) = exchange(answer, std::slice::from_ref(&req)).await;
            let err = got.remove(0).unwrap_err();
            assert!(matches!(err, CliError::Unsupported(_)), "{err:?}");
            assert_eq!(err.exit_code(), 76);
            let text = err.to_string();
            assert!(
                text.starts_with(
                    "this controller is too old for quotas (--data-limit, --reset, --expires, \
                     --on-hold); nothing was changed; upgrade it (it answered: "
                ),
                "{text}"
            );
            assert_eq!(
                seen,
                vec![req],
                "not retried without the flags: the operator asked for them"
            );
        }
    }
}

/// A controller from before quotas: users list and show as they always were.
fn users_before_quotas(req: &AdminRequest) -> Option<AdminResponse> {
    Some(match req {
        AdminRequest::UsersList => AdminResponse::Users(vec![]),
        AdminRequest::UsersShow { name } => AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: format!("user {name} not found"),
        },
        _ => return old_controller(req),
    })
}

#[tokio::test]
async fn users_list_and_show_fall_back_to_the_requests_an_older_controller_knows() {
    let answers = [
        (users_before_quotas as fn(&AdminRequest) -> _, true),
        (quotas_not_yet, false),
    ];
    for (answer, knows_users_show) in answers {
        let show_detail = AdminRequest::UsersShowDetail { name: "bob".into() };
        let asked = [AdminRequest::UsersListDetail, show_detail.clone()];
        let (mut got, seen) = exchange(answer, &asked).await;
        let show = got.remove(1).unwrap();
        let list = got.remove(0).unwrap();
        assert_eq!(
            seen,
            vec![
                AdminRequest::UsersListDetail,
                AdminRequest::UsersList,
                show_detail,
                AdminRequest::UsersShow { name: "bob".into() },
            ]
        );
        if knows_users_show {
            assert_eq!(list, AdminResponse::Users(vec![]));
            assert!(
                matches!(&show, AdminResponse::Error { message, .. } if message == "user bob not found"),
                "the older answer is rendered, refusal included: {show:?}"
            );
        }
    }
}

#[test]
fn user_detail_refusals_of_a_current_controller_stand() {
    let not_found = AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: "user bob not found".into(),
    };
    let show = AdminRequest::UsersShowDetail { name: "bob".into() };
    assert!(!not_served(&show, &not_found));
    assert!(!not_served(&add_with_limit(), &not_found));
    assert_eq!(
        legacy(&show),
        Some(AdminRequest::UsersShow { name: "bob".into() })
    );
    assert_eq!(
        legacy(&add_with_limit()),
        None,
        "no older form carries a quota"
    );
    assert_eq!(legacy(&edit_expiry()), None);
    let health = AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: "this controller does not serve host health yet".into(),
    };
    assert!(
        !not_served(&AdminRequest::UsersListDetail, &health),
        "each feature has its own words"
    );
}

#[tokio::test]
async fn a_controller_older_than_answers_in_parts_is_asked_with_the_request_inside() {
    // Older than parts and than health: two fallbacks, down to the request it knows.
    let req = in_chunks(AdminRequest::ServersListDetail);
    let (got, seen) = exchange(old_controller, std::slice::from_ref(&req)).await;
    assert_eq!(got[0].as_ref().unwrap(), &AdminResponse::Servers(vec![]));
    assert_eq!(
        seen,
        vec![
            req,
            AdminRequest::ServersListDetail,
            AdminRequest::ServersList
        ]
    );
    // Older than parts and quotas: `users list` as it always was.
    let req = in_chunks(AdminRequest::UsersListDetail);
    let (got, seen) = exchange(users_before_quotas, std::slice::from_ref(&req)).await;
    assert_eq!(got[0].as_ref().unwrap(), &AdminResponse::Users(vec![]));
    assert_eq!(
        seen,
        vec![req, AdminRequest::UsersListDetail, AdminRequest::UsersList]
    );
    // Older than parts and `doctor`: still "upgrade it", naming doctor's own words.
    let req = in_chunks(AdminRequest::Doctor);
    let (mut got, seen) = exchange(old_controller, std::slice::from_ref(&req)).await;
    let err = got.remove(0).unwrap_err();
    assert_eq!(err.exit_code(), 76);
    assert!(err.to_string().contains("cannot run these checks"), "{err}");
    assert_eq!(seen, vec![req, AdminRequest::Doctor]);
}

#[test]
fn list_requests_ask_for_parts_and_a_current_controllers_refusals_stand() {
    for list in [
        AdminRequest::ServersListDetail,
        AdminRequest::ServicesList,
        AdminRequest::UsersListDetail,
        usage_query(),
        AdminRequest::FirewallList,
        AdminRequest::Doctor,
    ] {
        assert_eq!(
            in_chunks(list.clone()),
            AdminRequest::InChunks(Box::new(list))
        );
    }
    let show = AdminRequest::UsersShowDetail { name: "bob".into() };
    assert_eq!(in_chunks(show.clone()), show, "one object: one frame");
    assert_eq!(in_chunks(add_with_limit()), add_with_limit());

    let wrapped = in_chunks(usage_query());
    let refusal = AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: "invalid --since: 2030-01-01T00:00:00Z is in the future".into(),
    };
    assert!(!not_served(&wrapped, &refusal));
    let old = AdminResponse::Error {
        kind: ErrorKind::BadData,
        message: "malformed request: Found an enum discriminant that was not recognized".into(),
    };
    assert!(not_served(&wrapped, &old));
    assert_eq!(legacy(&wrapped), Some(usage_query()));
}
