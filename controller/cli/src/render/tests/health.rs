//! The health answers (SPEC §2.8) in every format: the story of a fleet where one host's
//! service cannot run, one host is offline and one never joined.

use vpn_shared::proto::ContainerStatus;
use vpn_shared::proto::admin::{
    CheckLevel, DoctorCheck, DoctorReport, FailingResource, HostEvent, HostState, HostVitals,
    ServerDetail, ServiceDetail, ServiceHost, ServiceHostState, StatusDetail,
};

use super::*;

fn server_infos() -> Vec<ServerInfo> {
    let AdminResponse::Servers(list) = servers() else {
        unreachable!("servers() answers Servers");
    };
    list
}

fn image_missing() -> FailingResource {
    FailingResource {
        resource: "service/ss".into(),
        message: "image vpn/ss:nope not found".into(),
        first_seen: NOW - 300,
        last_seen: NOW - 4,
    }
}

fn bob_port() -> FailingResource {
    FailingResource {
        resource: "user/bob@ss".into(),
        message: "port 8390 in use".into(),
        first_seen: NOW - 120,
        last_seen: NOW - 4,
    }
}

/// fra-1 is degraded with two failures and a warning; ams-2 offline; nyc-3 never joined.
fn details() -> Vec<ServerDetail> {
    let mut infos = server_infos().into_iter();
    let mut next = || {
        infos
            .next()
            .unwrap_or_else(|| unreachable!("three servers"))
    };
    let detail = |server, state| ServerDetail {
        server,
        state,
        failing: vec![],
        events: vec![],
        vitals: None,
        warnings: vec![],
    };
    let fra = ServerDetail {
        failing: vec![image_missing(), bob_port()],
        warnings: vec!["certificate expires in 2d".into()],
        ..detail(next(), HostState::Degraded { failing: 2 })
    };
    vec![
        fra,
        detail(next(), HostState::Offline),
        detail(next(), HostState::Pending),
    ]
}

fn fra_shown() -> ServerDetail {
    let mut fra = details().remove(0);
    fra.vitals = Some(HostVitals {
        reported_at: NOW - 4,
        clock_skew_ms: 1250,
        cert_not_after: Some(NOW + 2 * 86400),
        containers: vec![ContainerStatus {
            name: "vpn-ss".into(),
            resource: "service/ss".into(),
            running: false,
            restarts: 3,
        }],
        disk_free_bytes: Some(12 * (1 << 30) + (1 << 29)),
        ledger_backlog: None,
    });
    fra.events = vec![
        HostEvent {
            at: NOW - 120,
            kind: "failing".into(),
            resource: Some("user/bob@ss".into()),
            message: "port 8390 in use".into(),
        },
        HostEvent {
            at: NOW - 3600,
            kind: "online".into(),
            resource: None,
            message: "connected from 203.0.113.7".into(),
        },
    ];
    fra
}

#[test]
fn servers_list_shows_degraded_offline_and_pending_with_a_warning_count() {
    let resp = AdminResponse::ServersDetail(details());
    let want = "\
NAME   STATUS                WARNINGS  ADDRESS      VERSION  LAST SEEN  GENERATION  SERVICES   USERS
fra-1  degraded (2 failing)  1         203.0.113.7  0.1.0    3s ago     7/7         ss         12
ams-2  offline               -         -            0.1.0    2h ago     6/9         ss,ss-alt  3
nyc-3  pending               -         -            -        never      -/1         -          0
";
    assert_eq!(show(&resp, &opts(Format::Table)), want);
    // Today's fields first, then state, failing resources, warnings.
    let want = "\
fra-1\tonline\t203.0.113.7\t0.1.0\t1738324797\t7\t7\tss\t12\tdegraded\t2\t1
ams-2\toffline\t-\t0.1.0\t1738317600\t6\t9\tss,ss-alt\t3\toffline\t0\t0
nyc-3\tnot-joined\t-\t-\t-\t-\t1\t-\t0\tpending\t0\t0
";
    assert_eq!(show(&resp, &opts(Format::Plain)), want);
    let empty = AdminResponse::ServersDetail(vec![]);
    assert_eq!(show(&empty, &opts(Format::Table)), "no servers\n");
}

#[test]
fn servers_show_names_each_failure_warning_vital_and_event() {
    let want = "\
Name:              fra-1
Host ID:           h-1
Status:            degraded (2 failing)
Address:           203.0.113.7
Agent version:     0.1.0
Last seen:         3s ago (2025-01-31T11:59:57Z)
Generation:        7/7 (acked/desired)
Cert expires:      2025-02-01T12:00:00Z
Services:          ss
Users:             12
Missing features:  -

Failing resources:
  RESOURCE     SINCE   LAST    MESSAGE
  service/ss   5m ago  4s ago  image vpn/ss:nope not found
  user/bob@ss  2m ago  4s ago  port 8390 in use

Warnings:
  certificate expires in 2d

Vitals (reported 4s ago):
  Clock skew:      +1.3 s (agent ahead)
  Certificate:     expires 2025-02-02T12:00:00Z (in 2d)
  Disk free:       12.5 GiB
  Ledger backlog:  n/a
  Containers:
    NAME    RESOURCE    STATE    RESTARTS
    vpn-ss  service/ss  stopped  3

Recent events:
  TIME    KIND     RESOURCE     MESSAGE
  2m ago  failing  user/bob@ss  port 8390 in use
  1h ago  online   -            connected from 203.0.113.7
";
    let resp = AdminResponse::ServerDetail(fra_shown());
    assert_eq!(show(&resp, &opts(Format::Table)), want);

    let want = "\
fra-1\tonline\t203.0.113.7\t0.1.0\t1738324797\t7\t7\tss\t12\tdegraded\t2\t1
failing\tservice/ss\timage vpn/ss:nope not found\t1738324500\t1738324796
failing\tuser/bob@ss\tport 8390 in use\t1738324680\t1738324796
warning\tcertificate expires in 2d
vitals\t1738324796\t1250\t1738497600\t13421772800\t-
container\tvpn-ss\tservice/ss\tstopped\t3
event\t1738324680\tfailing\tuser/bob@ss\tport 8390 in use
event\t1738321200\tonline\t-\tconnected from 203.0.113.7
";
    assert_eq!(show(&resp, &opts(Format::Plain)), want);
}

#[test]
fn a_host_without_a_report_says_none_and_n_a_instead_of_inventing_numbers() {
    let offline = details().remove(1);
    let shown = show(&AdminResponse::ServerDetail(offline), &opts(Format::Table));
    let tail = "
Failing resources: none

Warnings: none

Vitals: n/a (offline or not reported yet)

Recent events: none
";
    assert!(shown.ends_with(tail), "{shown}");
    assert!(shown.contains("Status:            offline\n"), "{shown}");

    // Reported, but the agent knows neither its certificate, its disk nor a ledger yet.
    let mut fra = fra_shown();
    fra.vitals = fra.vitals.map(|v| HostVitals {
        clock_skew_ms: -40,
        cert_not_after: None,
        disk_free_bytes: None,
        containers: vec![],
        ..v
    });
    let shown = show(&AdminResponse::ServerDetail(fra), &opts(Format::Table));
    for line in [
        "  Clock skew:      -40 ms (agent behind)\n",
        "  Certificate:     n/a\n",
        "  Disk free:       n/a\n",
        "  Ledger backlog:  n/a\n",
        "  Containers:      none\n",
    ] {
        assert!(shown.contains(line), "{line:?} missing in\n{shown}");
    }
}

fn status_detail() -> AdminResponse {
    AdminResponse::StatusDetail(StatusDetail {
        status: StatusInfo {
            controller_version: "0.1.0".into(),
            hosts_total: 3,
            hosts_online: 1,
            services: 1,
            users_total: 10,
            users_active: 9,
        },
        hosts_degraded: 1,
        hosts_offline: 1,
        failing_resources: 2,
        hosts_warned: 1,
    })
}

#[test]
fn status_counts_degraded_and_offline_hosts_failures_and_warnings() {
    let want = "\
Controller:           0.1.0
Hosts:                3 (1 online)
Degraded hosts:       1
Offline hosts:        1
Failing resources:    2
Hosts with warnings:  1
Services:             1
Users:                10 (9 active)
";
    assert_eq!(show(&status_detail(), &opts(Format::Table)), want);
    let want = "\
controller_version\t0.1.0
hosts_total\t3
hosts_online\t1
services\t1
users_total\t10
users_active\t9
hosts_degraded\t1
hosts_offline\t1
failing_resources\t2
hosts_warned\t1
";
    assert_eq!(show(&status_detail(), &opts(Format::Plain)), want);
}

fn service_detail() -> AdminResponse {
    let AdminResponse::Services(mut list) = services() else {
        unreachable!("services() answers Services");
    };
    let host = |server: &str, state, failing| ServiceHost {
        server: server.into(),
        state,
        failing,
    };
    AdminResponse::ServiceDetail(ServiceDetail {
        service: list.remove(0),
        hosts: vec![
            host("fra-1", ServiceHostState::Failing, vec![image_missing()]),
            host("lon-4", ServiceHostState::UsersFailing, vec![bob_port()]),
            host("par-5", ServiceHostState::Ok, vec![]),
            host("ams-2", ServiceHostState::Offline, vec![]),
            host("nyc-3", ServiceHostState::Pending, vec![]),
        ],
    })
}

#[test]
fn services_show_gives_each_hosts_state_and_failures() {
    let want = "\
Name:             ss
Protocol:         shadowsocks
Ports:            8388-9387
Servers:          all
Download cap:     1 Gbit/s
Upload cap:       1 Gbit/s
New connections:  20/s per source address
Image:            default
Method:           chacha20-ietf-poly1305

Hosts:
  SERVER  STATE          FAILING
  fra-1   failing        service/ss: image vpn/ss:nope not found
  lon-4   users failing  user/bob@ss: port 8390 in use
  par-5   ok             -
  ams-2   offline        -
  nyc-3   pending        -
";
    assert_eq!(show(&service_detail(), &opts(Format::Table)), want);
    let want = "\
ss\tshadowsocks\t8388\t1000\tall\t-\t1000000000\t1000000000\t20
host\tfra-1\tfailing\tservice/ss
host\tlon-4\tusers-failing\tuser/bob@ss
host\tpar-5\tok\t-
host\tams-2\toffline\t-
host\tnyc-3\tpending\t-
";
    assert_eq!(show(&service_detail(), &opts(Format::Plain)), want);
}

pub(super) fn doctor_report() -> DoctorReport {
    let check = |server: Option<&str>, check: &str, level, detail: &str| DoctorCheck {
        server: server.map(Into::into),
        check: check.into(),
        level,
        detail: detail.into(),
    };
    DoctorReport {
        checks: vec![
            check(None, "hosts", CheckLevel::Ok, "3 hosts registered"),
            check(Some("fra-1"), "online", CheckLevel::Ok, "connected"),
            check(
                Some("fra-1"),
                "resources",
                CheckLevel::Fail,
                "service/ss: image vpn/ss:nope not found",
            ),
            check(
                Some("fra-1"),
                "certificate",
                CheckLevel::Warn,
                "expires in 2d",
            ),
        ],
    }
}

#[test]
fn doctor_lists_every_check_and_sums_them_up() {
    let resp = AdminResponse::Doctor(doctor_report());
    let want = "\
SERVER  CHECK        LEVEL  DETAIL
fleet   hosts        OK     3 hosts registered
fra-1   online       OK     connected
fra-1   resources    FAIL   service/ss: image vpn/ss:nope not found
fra-1   certificate  WARN   expires in 2d
1 of 4 checks failed, 1 warned
";
    assert_eq!(show(&resp, &opts(Format::Table)), want);
    let want = "\
fleet\thosts\tok\t3 hosts registered
fra-1\tonline\tok\tconnected
fra-1\tresources\tfail\tservice/ss: image vpn/ss:nope not found
fra-1\tcertificate\twarn\texpires in 2d
";
    assert_eq!(show(&resp, &opts(Format::Plain)), want);

    let mut well = doctor_report();
    well.checks.retain(|c| c.level == CheckLevel::Ok);
    let shown = show(&AdminResponse::Doctor(well), &opts(Format::Table));
    assert!(shown.ends_with("\nall 2 checks ok\n"), "{shown}");
}

#[test]
fn health_json_carries_the_wire_field_names() {
    let out = show(
        &AdminResponse::ServerDetail(fra_shown()),
        &opts(Format::Json),
    );
    let v: serde_json::Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(e) => panic!("not JSON: {e}\n{out}"),
    };
    assert_eq!(v["state"], serde_json::json!({"degraded": {"failing": 2}}));
    assert_eq!(v["failing"][0]["resource"], "service/ss");
    assert_eq!(v["vitals"]["ledger_backlog"], serde_json::Value::Null);
    assert_eq!(v["server"]["name"], "fra-1");
    let out = show(&AdminResponse::Doctor(doctor_report()), &opts(Format::Yaml));
    assert!(out.contains("level: fail\n"), "{out}");
}

#[test]
fn sizes_times_and_skews_read_as_people_write_them() {
    use crate::render::{bytes, skew, until};
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(5 << 30), "5.0 GiB", "one decimal, as in users usage");
    assert_eq!(skew(0), "0 ms");
    assert_eq!(skew(999), "+999 ms (agent ahead)");
    assert_eq!(skew(-2500), "-2.5 s (agent behind)");
    assert_eq!(until(NOW, NOW + 90), "in 1m");
    assert_eq!(until(NOW, NOW - 7200), "expired 2h ago");
}
