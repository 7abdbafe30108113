//! The quota flags of `users add` and `users edit`: each flag, its conflicts, bad values naming
//! the flag, and which request a command line becomes (the older `UsersAdd`/`UsersEdit`
//! without any quota flag, so a new CLI still works against an old controller).

use clap::error::ErrorKind;
use vpn_shared::proto::admin::{
    AddUser, AdminRequest, EditUser, OnHoldSpec, Quota, QuotaEdit, Reset, Servers, When,
};

use super::{request, usage_error};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const DAY: i64 = 86400;
/// 2027-01-31T00:00:00Z.
const JAN_31_2027: i64 = 1_801_353_600;

fn add_quota(flags: &str) -> Quota {
    match request(&format!("users add alice --all-servers {flags}")) {
        AdminRequest::UsersAddWith { add, quota } => {
            assert_eq!(add.name, "alice");
            quota
        }
        other => panic!("`{flags}` is UsersAddWith, got {other:?}"),
    }
}

fn edit_quota(flags: &str) -> QuotaEdit {
    match request(&format!("users edit alice {flags}")) {
        AdminRequest::UsersEditWith { edit, quota } => {
            assert_eq!(edit.name, "alice");
            quota
        }
        other => panic!("`{flags}` is UsersEditWith, got {other:?}"),
    }
}

#[test]
fn users_add_without_quota_flags_stays_the_request_old_controllers_know() {
    let want = AdminRequest::UsersAdd(AddUser {
        name: "alice".into(),
        email: None,
        note: None,
        protocols: None,
        servers: Servers::All,
        bandwidth: Default::default(),
        wait: true,
    });
    assert_eq!(request("users add alice --all-servers"), want);
    let want = AdminRequest::UsersEdit(EditUser {
        name: "alice".into(),
        email: None,
        note: Some("vip".into()),
        bandwidth: None,
        wait: true,
    });
    assert_eq!(request("users edit alice --note vip"), want);
}

#[test]
fn users_add_carries_the_rest_of_the_user_beside_its_quota() {
    let args = "users add alice --server fra-1 --email a@example.com --bandwidth 8mbit \
                --data-limit 50GiB --reset month --no-wait";
    let AdminRequest::UsersAddWith { add, quota } = request(args) else {
        panic!("a data limit needs UsersAddWith");
    };
    assert_eq!(add.servers, Servers::Named(vec!["fra-1".into()]));
    assert_eq!(add.email.as_deref(), Some("a@example.com"));
    assert_eq!(add.bandwidth.down_bps, Some(8_000_000));
    assert!(!add.wait);
    let want = Quota {
        data_limit: Some(50 * GIB),
        reset: Reset::Month,
        expires: None,
        on_hold: None,
    };
    assert_eq!(quota, want);
}

#[test]
fn data_limits_are_sizes_in_iec_or_si_units_or_bytes() {
    let limit = |size: &str| add_quota(&format!("--data-limit {size}")).data_limit;
    assert_eq!(limit("50GiB"), Some(50 * GIB));
    assert_eq!(limit("1.5TiB"), Some(3 << 39));
    assert_eq!(limit("500MB"), Some(500_000_000));
    assert_eq!(limit("1048576"), Some(MIB));
    assert_eq!(limit("0"), Some(0), "zero is a limit that allows nothing");
    let q = add_quota("--data-limit 1MiB");
    assert_eq!(
        q.reset,
        Reset::Never,
        "without --reset the limit is for life"
    );
}

#[test]
fn each_reset_period_has_its_flag_spelling() {
    for reset in [
        Reset::Never,
        Reset::Day,
        Reset::Week,
        Reset::Month,
        Reset::Year,
    ] {
        let flags = format!("--data-limit 1GiB --reset {}", reset.as_str());
        assert_eq!(add_quota(&flags).reset, reset);
        assert_eq!(
            edit_quota(&format!("--reset {}", reset.as_str())).reset,
            Some(reset)
        );
    }
}

#[test]
fn expires_is_a_duration_on_the_controllers_clock_or_a_utc_moment() {
    let expires = |when: &str| add_quota(&format!("--expires {when}")).expires;
    assert_eq!(expires("30d"), Some(When::In(30 * DAY)));
    assert_eq!(expires("12h"), Some(When::In(12 * 3600)));
    assert_eq!(expires("2027-01-31"), Some(When::At(JAN_31_2027)));
    assert_eq!(
        expires("2027-01-31T12:00:00Z"),
        Some(When::At(JAN_31_2027 + DAY / 2))
    );
    assert_eq!(
        expires("2020-01-01"),
        Some(When::At(1_577_836_800)),
        "a past time is allowed: it expires the user at once"
    );
}

#[test]
fn on_hold_counts_from_first_use_with_an_optional_timeout() {
    let q = add_quota("--on-hold 30d");
    assert_eq!(
        q.on_hold,
        Some(OnHoldSpec {
            duration: 30 * DAY,
            timeout: None
        })
    );
    assert_eq!(q.expires, None);
    let q = add_quota("--on-hold 1h30m --on-hold-timeout 7d");
    assert_eq!(
        q.on_hold,
        Some(OnHoldSpec {
            duration: 5400,
            timeout: Some(When::In(7 * DAY))
        })
    );
    let q = add_quota("--on-hold 12h --on-hold-timeout 2027-01-31");
    assert_eq!(
        q.on_hold.and_then(|h| h.timeout),
        Some(When::At(JAN_31_2027))
    );
}

#[test]
fn users_edit_sets_or_removes_each_part_of_the_quota() {
    let want = QuotaEdit {
        data_limit: Some(Some(MIB)),
        ..QuotaEdit::default()
    };
    assert_eq!(edit_quota("--data-limit 1MiB"), want);
    let want = QuotaEdit {
        data_limit: Some(None),
        ..QuotaEdit::default()
    };
    assert_eq!(edit_quota("--no-data-limit"), want);
    assert_eq!(
        edit_quota("--reset week"),
        QuotaEdit {
            reset: Some(Reset::Week),
            ..QuotaEdit::default()
        },
        "an existing limit may get a period of its own"
    );
    let AdminRequest::UsersEditWith { edit, .. } =
        request("users edit alice --email b@example.com --data-limit 0 --no-wait")
    else {
        panic!("a data limit edit is UsersEditWith");
    };
    assert_eq!(edit.email.as_deref(), Some("b@example.com"));
    assert!(!edit.wait);
}

#[test]
fn users_edit_replaces_the_whole_time_rule_an_expiry_or_a_hold() {
    // An expiry and a hold exclude each other: setting one removes the other.
    let want = QuotaEdit {
        expires: Some(Some(When::In(30 * DAY))),
        on_hold: Some(None),
        ..QuotaEdit::default()
    };
    assert_eq!(edit_quota("--expires 30d"), want);
    let want = QuotaEdit {
        expires: Some(None),
        on_hold: Some(Some(OnHoldSpec {
            duration: 7 * DAY,
            timeout: Some(When::At(JAN_31_2027)),
        })),
        ..QuotaEdit::default()
    };
    assert_eq!(
        edit_quota("--on-hold 7d --on-hold-timeout 2027-01-31"),
        want
    );
    let want = QuotaEdit {
        expires: Some(None),
        on_hold: Some(None),
        ..QuotaEdit::default()
    };
    assert_eq!(
        edit_quota("--no-expiry"),
        want,
        "never expires, held or not"
    );
}

#[test]
fn quota_flags_that_contradict_each_other_are_refused() {
    let conflicts = [
        (
            "users add alice --all-servers --expires 30d --on-hold 7d",
            "--expires <WHEN>",
        ),
        (
            "users edit alice --expires 30d --on-hold 7d",
            "--expires <WHEN>",
        ),
        (
            "users edit alice --data-limit 1GiB --no-data-limit",
            "--no-data-limit",
        ),
        ("users edit alice --expires 30d --no-expiry", "--no-expiry"),
        ("users edit alice --on-hold 30d --no-expiry", "--no-expiry"),
    ];
    for (args, flag) in conflicts {
        let (kind, msg) = usage_error(args);
        assert_eq!(kind, ErrorKind::ArgumentConflict, "{args}");
        assert!(msg.contains(flag), "{args}: {msg}");
    }
    for args in [
        "users add alice --all-servers --on-hold-timeout 7d",
        "users edit alice --data-limit 1GiB --on-hold-timeout 7d",
    ] {
        let (kind, msg) = usage_error(args);
        assert_eq!(kind, ErrorKind::MissingRequiredArgument, "{args}");
        assert!(msg.contains("--on-hold <DURATION>"), "{args}: {msg}");
    }
}

#[test]
fn a_new_users_reset_needs_a_data_limit() {
    let (kind, msg) = usage_error("users add alice --all-servers --reset month");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(
        msg.starts_with("error: --reset needs --data-limit"),
        "{msg}"
    );
    let (_, msg) = usage_error("users add alice --all-servers --reset none --expires 1d");
    assert!(msg.contains("--reset needs --data-limit"), "{msg}");
}

#[test]
fn the_edits_change_group_takes_the_quota_flags() {
    for flags in [
        "--data-limit 1GiB",
        "--no-data-limit",
        "--reset day",
        "--expires 1d",
        "--no-expiry",
        "--on-hold 1d",
    ] {
        edit_quota(flags);
    }
    let (kind, msg) = usage_error("users edit alice");
    assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    assert!(
        msg.contains("|--data-limit <SIZE>|--no-data-limit|--reset <PERIOD>|--expires <WHEN>|"),
        "{msg}"
    );
}

#[test]
fn bad_sizes_periods_moments_and_durations_name_the_flag() {
    let cases = [
        (
            "--data-limit 50G",
            "invalid value '50G' for '--data-limit <SIZE>': unit `G` is ambiguous",
        ),
        (
            "--data-limit=-1GiB",
            "invalid value '-1GiB' for '--data-limit <SIZE>': `-1GiB` is negative",
        ),
        (
            "--data-limit lots",
            "invalid value 'lots' for '--data-limit <SIZE>': `lots` is not a size",
        ),
        (
            "--data-limit 1GiB --reset monthly",
            "invalid value 'monthly' for '--reset <PERIOD>'",
        ),
        (
            "--expires soon",
            "invalid value 'soon' for '--expires <WHEN>': `soon` is neither a duration",
        ),
        (
            "--expires 2027-02-30",
            "invalid value '2027-02-30' for '--expires <WHEN>': `2027-02-30` is not a UTC date",
        ),
        (
            "--expires 0s",
            "invalid value '0s' for '--expires <WHEN>': must be longer than zero",
        ),
        (
            "--on-hold forever",
            "invalid value 'forever' for '--on-hold <DURATION>'",
        ),
        (
            "--on-hold 0d",
            "invalid value '0d' for '--on-hold <DURATION>': must be longer than zero",
        ),
        (
            "--on-hold 2027-01-31",
            "invalid value '2027-01-31' for '--on-hold <DURATION>'",
        ),
        (
            "--on-hold 30d --on-hold-timeout later",
            "invalid value 'later' for '--on-hold-timeout <WHEN>'",
        ),
    ];
    for (flags, want) in cases {
        for cmd in ["users add alice --all-servers", "users edit alice"] {
            let (kind, msg) = usage_error(&format!("{cmd} {flags}"));
            // A period outside the list is clap's own `InvalidValue`; the rest fail parsing.
            assert!(
                matches!(kind, ErrorKind::ValueValidation | ErrorKind::InvalidValue),
                "{cmd} {flags}: {kind:?}"
            );
            assert!(msg.starts_with(&format!("error: {want}")), "{flags}: {msg}");
        }
    }
    let (kind, msg) = usage_error(
        "users add alice --all-servers --data-limit 1GiB --reset month --expires 2027-01-31T10:00:00+01:00",
    );
    assert_eq!(kind, ErrorKind::ValueValidation);
    assert!(msg.contains("only UTC: end it with Z"), "{msg}");
}

#[test]
fn users_list_and_show_ask_with_the_quota_detail_requests() {
    assert_eq!(request("users list"), AdminRequest::UsersListDetail);
    assert_eq!(
        request("users show alice -o json"),
        AdminRequest::UsersShowDetail {
            name: "alice".into()
        }
    );
}
