//! Golden bytes: the encoding of every message is pinned in `golden/*.hex`.
//!
//! Postcard has no schema evolution, so a change here is a wire break. Run with
//! `GOLDEN_UPDATE=1` to rewrite the files only when adding a new message or variant at the end.

use std::path::PathBuf;

use super::admin::*;
use super::*;
use crate::model::{
    Bandwidth, Change, Credential, Digest, FirewallSpec, Protocol, ServiceOptions, ServiceSpec,
    UserSpec, VlessEngine, VlessOptions, WireguardOptions,
};
use crate::model::{ProxyKind, ProxyOptions};

fn service() -> ServiceSpec {
    ServiceSpec {
        name: "ss".into(),
        protocol: Protocol::Shadowsocks,
        port: 8388,
        image: Some("img:1".into()),
        options: ServiceOptions::Shadowsocks {
            method: "chacha20-ietf-poly1305".into(),
        },
        bandwidth: Bandwidth {
            down_bps: Some(200_000_000),
            up_bps: None,
        },
        new_conn_rate: Some(20),
    }
}

fn user() -> UserSpec {
    UserSpec {
        name: "alice".into(),
        id: "0b4e".into(),
        credentials: vec![Credential::Shadowsocks {
            service: "ss".into(),
            port: 8389,
            password: "pw".into(),
        }],
        bandwidth: Bandwidth {
            down_bps: Some(8_000_000),
            up_bps: Some(4_000_000),
        },
    }
}

fn vless_service() -> ServiceSpec {
    ServiceSpec {
        name: "vless".into(),
        protocol: Protocol::Vless,
        port: 443,
        image: None,
        options: ServiceOptions::Vless(VlessOptions {
            engine: VlessEngine::Shoes,
            sni: "www.example.com".into(),
            dest: "www.example.com:443".into(),
            private_key: "priv".into(),
            public_key: "pub".into(),
            short_ids: vec!["0123456789abcdef".into()],
        }),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    }
}

fn wireguard_service() -> ServiceSpec {
    ServiceSpec {
        name: "wireguard".into(),
        protocol: Protocol::Wireguard,
        port: 51820,
        image: None,
        options: ServiceOptions::Wireguard(WireguardOptions {
            subnet: "10.66.0.0/16".into(),
            ipv6_subnet: Some("fd66::/64".into()),
            dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
            mtu: Some(1380),
            private_key: "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=".into(),
        }),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    }
}

fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let d = Digest([7; 32]);
    let enc = |v: &dyn erased::Enc| v.bytes();
    vec![
        (
            "agent_hello",
            enc(&AgentMsg::Hello(AgentHello {
                min_version: 1,
                max_version: 1,
                host_id: "h1".into(),
                agent_version: "0.1.0".into(),
                applied: Some((3, d)),
                public_address: None,
            })),
        ),
        ("agent_keepalive", enc(&AgentMsg::KeepAlive)),
        (
            "agent_ack",
            enc(&AgentMsg::Ack(Ack {
                generation: 4,
                digest: d,
                results: vec![
                    ResourceResult::ok("service/ss"),
                    ResourceResult::error("user/a@ss", "x"),
                ],
            })),
        ),
        (
            "agent_resync",
            enc(&AgentMsg::ResyncRequest {
                reason: "gap".into(),
            }),
        ),
        (
            "ctl_welcome",
            enc(&ControllerMsg::Welcome {
                version: 1,
                host_name: "h".into(),
            }),
        ),
        (
            "ctl_full_state",
            enc(&ControllerMsg::FullState(StateChunk {
                generation: 5,
                digest: d,
                index: 0,
                last: true,
                services: vec![service()],
                users: vec![user()],
                firewall: FirewallSpec {
                    blocked: vec!["203.0.113.0/24".into()],
                },
            })),
        ),
        (
            "ctl_delta",
            enc(&ControllerMsg::Delta {
                base_generation: 5,
                generation: 6,
                digest: d,
                changes: vec![
                    Change::UpsertService(service()),
                    Change::RemoveService { name: "ss".into() },
                    Change::UpsertUser(user()),
                    Change::RemoveUser { name: "bob".into() },
                ],
            }),
        ),
        ("ctl_keepalive", enc(&ControllerMsg::KeepAlive)),
        (
            "ctl_refused",
            enc(&ControllerMsg::Refused {
                reason: "no".into(),
            }),
        ),
        (
            "agent_renew",
            enc(&AgentMsg::RenewRequest {
                csr_pem: "csr".into(),
            }),
        ),
        (
            "agent_health",
            enc(&AgentMsg::Health(HostHealth {
                missing: vec!["act_connmark: x".into()],
            })),
        ),
        (
            "ctl_renewed",
            enc(&ControllerMsg::Renewed {
                cert_pem: "c".into(),
            }),
        ),
        (
            "ctl_renew_failed",
            enc(&ControllerMsg::RenewFailed { reason: "r".into() }),
        ),
        (
            "enroll_request",
            enc(&EnrollRequest {
                version: 1,
                token: "t".into(),
                csr_pem: "csr".into(),
                agent_version: "0.1.0".into(),
            }),
        ),
        (
            "enroll_accepted",
            enc(&EnrollResponse::Accepted {
                host_id: "h1".into(),
                host_name: "n".into(),
                cert_pem: "c".into(),
                ca_pem: "ca".into(),
            }),
        ),
        (
            "enroll_refused",
            enc(&EnrollResponse::Refused { reason: "r".into() }),
        ),
        ("admin_requests", enc(&admin_requests())),
        (
            "ctl_delta_vless",
            enc(&ControllerMsg::Delta {
                base_generation: 6,
                generation: 7,
                digest: d,
                changes: vec![
                    Change::UpsertService(vless_service()),
                    Change::UpsertUser(UserSpec {
                        credentials: vec![Credential::Vless {
                            service: "vless".into(),
                            port: 444,
                            uuid: "b831381d-6324-4d53-ad4f-8cda48b30811".into(),
                        }],
                        ..user()
                    }),
                ],
            }),
        ),
        (
            "ctl_delta_wireguard",
            enc(&ControllerMsg::Delta {
                base_generation: 8,
                generation: 9,
                digest: d,
                changes: vec![
                    Change::UpsertService(wireguard_service()),
                    Change::UpsertUser(UserSpec {
                        credentials: vec![Credential::Wireguard {
                            service: "wireguard".into(),
                            port: 51820,
                            public_key: "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=".into(),
                            preshared_key: "psk".into(),
                            allowed_ips: vec!["10.66.0.2/32".into(), "fd66::2/128".into()],
                        }],
                        ..user()
                    }),
                ],
            }),
        ),
        (
            "admin_deploy_wireguard",
            enc(&vec![AdminRequest::ServicesDeployWith {
                deploy: DeployService {
                    protocol: Protocol::Wireguard,
                    name: None,
                    port: 51820,
                    servers: Servers::All,
                    image: None,
                    method: None,
                    bandwidth: Bandwidth::default(),
                    new_conn_rate: None,
                    wait: true,
                },
                options: DeployOptions::Wireguard(DeployWireguard {
                    subnet: "10.66.0.0/16".into(),
                    ipv6_subnet: Some("fd66::/64".into()),
                    dns: vec!["1.1.1.1".into()],
                    mtu: Some(1380),
                }),
            }]),
        ),
        (
            "admin_deploy_with",
            enc(&vec![
                AdminRequest::ServicesDeployWith {
                    deploy: DeployService {
                        protocol: Protocol::Vless,
                        name: None,
                        port: 443,
                        servers: Servers::All,
                        image: None,
                        method: None,
                        bandwidth: Bandwidth::default(),
                        new_conn_rate: None,
                        wait: true,
                    },
                    options: DeployOptions::Vless(DeployVless {
                        engine: Some(VlessEngine::Xray),
                        sni: "www.example.com".into(),
                        dest: "www.example.com:443".into(),
                        short_ids: Some(2),
                    }),
                },
                AdminRequest::ServicesDeployWith {
                    deploy: DeployService {
                        protocol: Protocol::Shadowsocks,
                        name: Some("ss".into()),
                        port: 8388,
                        servers: Servers::Named(vec!["h".into()]),
                        image: None,
                        method: None,
                        bandwidth: Bandwidth::default(),
                        new_conn_rate: None,
                        wait: false,
                    },
                    options: DeployOptions::Shadowsocks { method: None },
                },
            ]),
        ),
        ("admin_responses", enc(&admin_responses())),
        (
            "agent_report",
            enc(&AgentMsg::Report(AgentReport {
                sent_at_ms: 1_700_000_000_123,
                generation: 4,
                results: vec![ResourceResult::error("service/ss", "no such image")],
                repairs: vec![Repair {
                    resource: "service/ss".into(),
                    action: "container was missing; created".into(),
                    at: 1_700_000_000,
                }],
                containers: vec![ContainerStatus {
                    name: "vpn-h-ss".into(),
                    resource: "service/ss".into(),
                    running: true,
                    restarts: 2,
                }],
                cert_not_after: Some(1_702_592_000),
                disk_free_bytes: Some(1 << 30),
                ledger_backlog: None,
            })),
        ),
        (
            "admin_health_requests",
            enc(&vec![
                AdminRequest::ServersListDetail,
                AdminRequest::ServersShowDetail { name: "h".into() },
                AdminRequest::StatusDetail,
                AdminRequest::ServicesShowDetail { name: "s".into() },
                AdminRequest::Doctor,
            ]),
        ),
        (
            "admin_edit_with",
            enc(&vec![
                AdminRequest::ServicesEditWith {
                    edit: EditService {
                        name: "ss".into(),
                        bandwidth: None,
                        new_conn_rate: None,
                        wait: true,
                    },
                    image: Some(Some("vpn-fleet/shadowsocks-rust:local".into())),
                },
                AdminRequest::ServicesEditWith {
                    edit: EditService {
                        name: "ss".into(),
                        bandwidth: Some(Bandwidth::default()),
                        new_conn_rate: Some(None),
                        wait: false,
                    },
                    image: Some(None),
                },
            ]),
        ),
        ("admin_health_responses", enc(&admin_health_responses())),
        (
            "agent_usage",
            enc(&AgentMsg::Usage(UsageReport {
                epoch: 0x1234_5678_9abc_def0,
                entries: vec![UsageEntry {
                    seq: 41,
                    user: "0b4e".into(),
                    service: "ss".into(),
                    up: 0,
                    down: 0,
                    undirected: 1_048_576,
                    from: 1_700_000_000,
                    to: 1_700_000_010,
                }],
            })),
        ),
        (
            "ctl_usage_ack",
            enc(&ControllerMsg::UsageAck {
                epoch: 0x1234_5678_9abc_def0,
                up_to: 41,
            }),
        ),
        (
            "admin_usage",
            enc(&(
                AdminRequest::UsersUsage(UsageQuery {
                    user: Some("alice".into()),
                    since: Some(1_700_000_000),
                    by: UsageBy::Server,
                }),
                AdminResponse::Usage(UsageInfo {
                    since: None,
                    by: UsageBy::Day,
                    rows: vec![UsageRow {
                        user: "alice".into(),
                        key: Some("2026-12-01".into()),
                        up: 1,
                        down: 2,
                        undirected: 3,
                        total: 6,
                    }],
                }),
            )),
        ),
        (
            "agent_enforced",
            enc(&AgentMsg::Enforced(vec![
                CutOff {
                    user: "0b4e".into(),
                    cause: CutOffCause::DataUsedUp,
                    at: 1_700_000_020,
                },
                CutOff {
                    user: "0b4f".into(),
                    cause: CutOffCause::Expired,
                    at: 1_700_000_030,
                },
            ])),
        ),
        (
            "ctl_allowances",
            enc(&ControllerMsg::Allowances(Allowances {
                epoch: 0x1234_5678_9abc_def0,
                up_to: 41,
                complete: true,
                users: vec![
                    Allowance {
                        user: "0b4e".into(),
                        remaining: Some(1_048_576),
                        expires_at: None,
                    },
                    Allowance {
                        user: "0b4f".into(),
                        remaining: None,
                        expires_at: Some(1_800_000_000),
                    },
                ],
            })),
        ),
        ("admin_quota", enc(&admin_quota())),
        (
            "ctl_delta_proxy",
            enc(&ControllerMsg::Delta {
                base_generation: 8,
                generation: 9,
                digest: d,
                changes: vec![
                    Change::UpsertService(ServiceSpec {
                        name: "proxy".into(),
                        protocol: Protocol::Proxy,
                        port: 3128,
                        image: None,
                        options: ServiceOptions::Proxy(ProxyOptions {
                            kind: ProxyKind::Both,
                        }),
                        bandwidth: Bandwidth::default(),
                        new_conn_rate: None,
                    }),
                    Change::UpsertUser(UserSpec {
                        credentials: vec![Credential::Proxy {
                            service: "proxy".into(),
                            port: 3129,
                            username: "alice".into(),
                            password: "pw".into(),
                        }],
                        ..user()
                    }),
                ],
            }),
        ),
        (
            "admin_deploy_proxy",
            enc(&vec![AdminRequest::ServicesDeployWith {
                deploy: DeployService {
                    protocol: Protocol::Proxy,
                    name: None,
                    port: 3128,
                    servers: Servers::All,
                    image: None,
                    method: None,
                    bandwidth: Bandwidth::default(),
                    new_conn_rate: None,
                    wait: true,
                },
                options: DeployOptions::Proxy {
                    kind: Some(ProxyKind::Socks5),
                },
            }]),
        ),
        ("admin_chunks", enc(&admin_chunks())),
        ("admin_ports", enc(&admin_ports())),
        ("admin_stream", enc(&admin_stream())),
    ]
}

/// A subscription and one frame of each message of its stream.
fn admin_stream() -> (Vec<AdminRequest>, Vec<AdminResponse>) {
    use super::stream::{HostRateInfo, SnapshotPart, StreamEvent, StreamMsg};
    let health = admin_health_responses();
    let host = health
        .iter()
        .find_map(|r| match r {
            AdminResponse::ServerDetail(d) => Some(d.clone()),
            _ => None,
        })
        .expect("a host sample");
    let service = health
        .iter()
        .find_map(|r| match r {
            AdminResponse::ServiceDetail(d) => Some(d.service.clone()),
            _ => None,
        })
        .expect("a service sample");
    let user = admin_quota()
        .1
        .into_iter()
        .find_map(|r| match r {
            AdminResponse::UserDetail(d) => Some(d),
            _ => None,
        })
        .expect("a user sample");
    let event = StreamEvent {
        host: "h".into(),
        event: host.events[0].clone(),
    };
    let messages = vec![
        StreamMsg::Snapshot(SnapshotPart {
            hosts: vec![host.clone()],
            services: vec![service.clone()],
            users: vec![user.clone()],
            events: vec![event.clone()],
            last: false,
        }),
        StreamMsg::Snapshot(SnapshotPart {
            last: true,
            ..SnapshotPart::default()
        }),
        StreamMsg::HostChanged(host),
        StreamMsg::HostRemoved("h".into()),
        StreamMsg::ServiceChanged(service),
        StreamMsg::ServiceRemoved("ss".into()),
        StreamMsg::UserChanged(user),
        StreamMsg::UserRemoved("a".into()),
        StreamMsg::Event(event),
        StreamMsg::Rates(vec![HostRateInfo {
            host: "h".into(),
            rx_bps: 8_000,
            tx_bps: 16_000,
            cpu_permille: None,
            mem_permille: Some(125),
        }]),
        StreamMsg::Lagged,
    ];
    (
        vec![AdminRequest::Subscribe],
        messages.into_iter().map(AdminResponse::Stream).collect(),
    )
}

/// A deploy with a range of its own size, and a range resized by `services edit`.
fn admin_ports() -> Vec<AdminRequest> {
    vec![
        AdminRequest::ServicesDeployPorts {
            deploy: DeployService {
                protocol: Protocol::Shadowsocks,
                name: Some("ss".into()),
                port: 20_000,
                servers: Servers::All,
                image: None,
                method: None,
                bandwidth: Bandwidth::default(),
                new_conn_rate: None,
                wait: true,
            },
            options: DeployOptions::Shadowsocks { method: None },
            ports: 20_000,
        },
        AdminRequest::ServicesEditPorts {
            edit: EditService {
                name: "ss".into(),
                bandwidth: None,
                new_conn_rate: Some(Some(20)),
                wait: false,
            },
            image: None,
            ports: 45_535,
        },
    ]
}

/// A request for an answer in parts, and the frames of such an answer: parts before the last
/// as `More`, the last plain.
fn admin_chunks() -> (Vec<AdminRequest>, Vec<AdminResponse>) {
    let requests = vec![
        AdminRequest::InChunks(Box::new(AdminRequest::UsersListDetail)),
        AdminRequest::InChunks(Box::new(AdminRequest::UsersUsage(UsageQuery {
            user: None,
            since: None,
            by: UsageBy::User,
        }))),
    ];
    let (_, quota) = admin_quota();
    let part = quota
        .into_iter()
        .find(|r| matches!(r, AdminResponse::UsersDetail(_)))
        .expect("a users sample");
    let responses = vec![AdminResponse::More(Box::new(part.clone())), part];
    (requests, responses)
}

/// The quota requests and their answers, in one sample.
fn admin_quota() -> (Vec<AdminRequest>, Vec<AdminResponse>) {
    let add = AddUser {
        name: "a".into(),
        email: None,
        note: None,
        protocols: None,
        servers: Servers::All,
        bandwidth: Bandwidth::default(),
        wait: true,
    };
    let edit = EditUser {
        name: "a".into(),
        email: None,
        note: None,
        bandwidth: None,
        wait: false,
    };
    let requests = vec![
        AdminRequest::UsersAddWith {
            add,
            quota: Quota {
                data_limit: Some(1 << 20),
                reset: Reset::Day,
                expires: None,
                on_hold: Some(OnHoldSpec {
                    duration: 2_592_000,
                    timeout: Some(When::In(604_800)),
                }),
            },
        },
        AdminRequest::UsersEditWith {
            edit,
            quota: QuotaEdit {
                data_limit: Some(None),
                reset: Some(Reset::Year),
                expires: Some(Some(When::At(1_800_000_000))),
                on_hold: Some(None),
            },
        },
        AdminRequest::UsersListDetail,
        AdminRequest::UsersShowDetail { name: "a".into() },
    ];
    let user = admin_responses()
        .into_iter()
        .find_map(|r| match r {
            AdminResponse::User(u) => Some(u),
            _ => None,
        })
        .expect("a user sample");
    let detail = UserDetail {
        user,
        quota: UserQuota {
            data_limit: Some(1 << 20),
            reset: Reset::Month,
            used: 1 << 20,
            period_start: Some(1_700_000_000),
            next_reset: Some(1_702_592_000),
            expires_at: Some(1_800_000_000),
            on_hold: Some(OnHoldInfo {
                duration: 86_400,
                timeout_at: None,
            }),
            first_use: Some(1_700_000_100),
            reason: Some("limited: 1.0 MiB of 1 MiB used".into()),
        },
    };
    let responses = vec![
        AdminResponse::UsersDetail(vec![detail.clone()]),
        AdminResponse::UserDetail(detail),
    ];
    (requests, responses)
}

fn admin_health_responses() -> Vec<AdminResponse> {
    let failing = FailingResource {
        resource: "service/ss".into(),
        message: "no such image".into(),
        first_seen: 10,
        last_seen: 20,
    };
    let detail = ServerDetail {
        server: admin_responses()
            .into_iter()
            .find_map(|r| match r {
                AdminResponse::Server(s) => Some(s),
                _ => None,
            })
            .expect("a server sample"),
        state: HostState::Degraded { failing: 1 },
        failing: vec![failing.clone()],
        events: vec![HostEvent {
            at: 15,
            kind: "repaired".into(),
            resource: Some("service/ss".into()),
            message: "container was missing; created".into(),
        }],
        vitals: Some(HostVitals {
            reported_at: 20,
            clock_skew_ms: -40,
            cert_not_after: Some(99),
            containers: vec![ContainerStatus {
                name: "vpn-h-ss".into(),
                resource: "service/ss".into(),
                running: false,
                restarts: 0,
            }],
            disk_free_bytes: Some(5),
            ledger_backlog: Some(0),
        }),
        warnings: vec!["certificate expires in 1 day".into()],
    };
    let status = StatusInfo {
        controller_version: "0.1.0".into(),
        hosts_total: 3,
        hosts_online: 2,
        services: 1,
        users_total: 1,
        users_active: 1,
    };
    let service = ServiceInfo {
        name: "ss".into(),
        protocol: Protocol::Shadowsocks,
        port: 1,
        port_span: 2,
        image: None,
        all_servers: true,
        servers: vec![],
        options: "{}".into(),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    };
    let hosts = [
        ServiceHostState::Ok,
        ServiceHostState::Failing,
        ServiceHostState::UsersFailing,
        ServiceHostState::Offline,
        ServiceHostState::Pending,
    ]
    .into_iter()
    .map(|state| ServiceHost {
        server: "h".into(),
        state,
        failing: vec![failing.clone()],
    })
    .collect();
    let states = [HostState::Pending, HostState::Online, HostState::Offline];
    vec![
        AdminResponse::ServersDetail(
            states
                .into_iter()
                .map(|state| ServerDetail {
                    state,
                    ..detail.clone()
                })
                .collect(),
        ),
        AdminResponse::ServerDetail(detail),
        AdminResponse::StatusDetail(StatusDetail {
            status,
            hosts_degraded: 1,
            hosts_offline: 1,
            failing_resources: 2,
            hosts_warned: 1,
        }),
        AdminResponse::ServiceDetail(ServiceDetail { service, hosts }),
        AdminResponse::Doctor(DoctorReport {
            checks: [CheckLevel::Ok, CheckLevel::Warn, CheckLevel::Fail]
                .into_iter()
                .map(|level| DoctorCheck {
                    server: Some("h".into()),
                    check: "online".into(),
                    level,
                    detail: "d".into(),
                })
                .collect(),
        }),
    ]
}

fn admin_requests() -> Vec<AdminRequest> {
    vec![
        AdminRequest::ServersAdd {
            name: "h".into(),
            expires_secs: 3600,
        },
        AdminRequest::ServersList,
        AdminRequest::ServersShow { name: "h".into() },
        AdminRequest::ServersRemove { name: "h".into() },
        AdminRequest::ServicesDeploy(DeployService {
            protocol: Protocol::Shadowsocks,
            name: None,
            port: 8388,
            servers: Servers::All,
            image: None,
            method: Some("m".into()),
            bandwidth: Bandwidth {
                down_bps: Some(1),
                up_bps: None,
            },
            new_conn_rate: Some(5),
            wait: true,
        }),
        AdminRequest::ServicesList,
        AdminRequest::ServicesShow { name: "s".into() },
        AdminRequest::ServicesRemove {
            name: "s".into(),
            wait: false,
        },
        AdminRequest::UsersAdd(AddUser {
            name: "a".into(),
            email: Some("e".into()),
            note: None,
            protocols: Some(vec![Protocol::Shadowsocks]),
            servers: Servers::Named(vec!["h".into()]),
            bandwidth: Bandwidth::default(),
            wait: true,
        }),
        AdminRequest::UsersList,
        AdminRequest::UsersShow { name: "a".into() },
        AdminRequest::UsersRemove {
            name: "a".into(),
            wait: true,
        },
        AdminRequest::UsersSuspend {
            name: "a".into(),
            wait: true,
        },
        AdminRequest::UsersResume {
            name: "a".into(),
            wait: true,
        },
        AdminRequest::UsersLink {
            name: "a".into(),
            server: None,
            protocol: None,
        },
        AdminRequest::Status,
        AdminRequest::UsersEdit(EditUser {
            name: "a".into(),
            email: None,
            note: Some("n".into()),
            bandwidth: Some(Bandwidth {
                down_bps: Some(8_000_000),
                up_bps: Some(8_000_000),
            }),
            wait: true,
        }),
        AdminRequest::ServicesEdit(EditService {
            name: "s".into(),
            bandwidth: None,
            new_conn_rate: Some(None),
            wait: false,
        }),
        AdminRequest::FirewallBlock {
            target: "203.0.113.0/24".into(),
            servers: Servers::All,
            wait: true,
        },
        AdminRequest::FirewallUnblock {
            target: "203.0.113.0/24".into(),
            servers: Servers::Named(vec!["h".into()]),
            wait: true,
        },
        AdminRequest::FirewallList,
    ]
}

fn admin_responses() -> Vec<AdminResponse> {
    let server = ServerInfo {
        name: "h".into(),
        host_id: "id".into(),
        online: true,
        enrolled: true,
        address: Some("a".into()),
        agent_version: None,
        last_seen: Some(1),
        desired_generation: 2,
        acked_generation: Some(2),
        cert_not_after: None,
        services: vec!["ss".into()],
        users: 3,
        health: vec![],
    };
    let service = ServiceInfo {
        name: "ss".into(),
        protocol: Protocol::Shadowsocks,
        port: 1,
        port_span: 2,
        image: None,
        all_servers: true,
        servers: vec![],
        options: "{}".into(),
        bandwidth: Bandwidth::default(),
        new_conn_rate: None,
    };
    let user = UserInfo {
        name: "a".into(),
        id: "i".into(),
        email: None,
        note: None,
        status: "active".into(),
        all_servers: true,
        servers: vec![],
        protocols: None,
        bandwidth: Bandwidth::default(),
        created_at: 1,
        updated_at: 2,
    };
    vec![
        AdminResponse::Error {
            kind: ErrorKind::BadData,
            message: "m".into(),
        },
        AdminResponse::ServerAdded(ServerAdded {
            name: "h".into(),
            host_id: "i".into(),
            join: "j".into(),
            expires_at: 9,
        }),
        AdminResponse::Servers(vec![server.clone()]),
        AdminResponse::Server(server),
        AdminResponse::Services(vec![service.clone()]),
        AdminResponse::Service(service),
        AdminResponse::Users(vec![user.clone()]),
        AdminResponse::User(user),
        AdminResponse::Links(vec![LinkInfo {
            server: "h".into(),
            service: "ss".into(),
            protocol: Protocol::Shadowsocks,
            url: "ss://x".into(),
        }]),
        AdminResponse::Status(StatusInfo {
            controller_version: "0.1.0".into(),
            hosts_total: 1,
            hosts_online: 1,
            services: 1,
            users_total: 1,
            users_active: 1,
        }),
        AdminResponse::Applied(Applied {
            summary: "s".into(),
            hosts: vec![
                HostApply {
                    server: "h".into(),
                    generation: 1,
                    state: HostApplyState::Applied,
                },
                HostApply {
                    server: "h".into(),
                    generation: 1,
                    state: HostApplyState::Failed(vec!["x".into()]),
                },
                HostApply {
                    server: "h".into(),
                    generation: 1,
                    state: HostApplyState::Pending,
                },
                HostApply {
                    server: "h".into(),
                    generation: 1,
                    state: HostApplyState::NotWaited,
                },
            ],
        }),
        AdminResponse::Firewall(vec![FirewallRuleInfo {
            target: "203.0.113.0/24".into(),
            server: None,
            created_at: 3,
        }]),
    ]
}

/// Lets `samples` hold values of different types in one list.
mod erased {
    pub trait Enc {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Enc for T {
        fn bytes(&self) -> Vec<u8> {
            postcard::to_stdvec(self).expect("sample encodes")
        }
    }
}

#[test]
fn every_message_encodes_to_its_golden_bytes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/proto/golden");
    let update = std::env::var_os("GOLDEN_UPDATE").is_some();
    let mut mismatches = Vec::new();
    for (name, bytes) in samples() {
        let path = dir.join(format!("{name}.hex"));
        let actual = hex::encode(&bytes);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
        if expected.trim() != actual {
            mismatches.push(format!("{name}: expected {} got {actual}", expected.trim()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "wire encoding changed:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_golden_sample_decodes_back() {
    for (name, bytes) in samples() {
        let ok = match name {
            n if n.starts_with("agent_") => postcard::from_bytes::<AgentMsg>(&bytes).is_ok(),
            n if n.starts_with("ctl_") => postcard::from_bytes::<ControllerMsg>(&bytes).is_ok(),
            "enroll_request" => postcard::from_bytes::<EnrollRequest>(&bytes).is_ok(),
            n if n.starts_with("enroll_") => postcard::from_bytes::<EnrollResponse>(&bytes).is_ok(),
            "admin_requests"
            | "admin_deploy_with"
            | "admin_deploy_proxy"
            | "admin_deploy_wireguard"
            | "admin_health_requests"
            | "admin_edit_with"
            | "admin_ports" => postcard::from_bytes::<Vec<AdminRequest>>(&bytes).is_ok(),
            "admin_usage" => postcard::from_bytes::<(AdminRequest, AdminResponse)>(&bytes).is_ok(),
            "admin_quota" | "admin_chunks" | "admin_stream" => {
                postcard::from_bytes::<(Vec<AdminRequest>, Vec<AdminResponse>)>(&bytes).is_ok()
            }
            "admin_responses" | "admin_health_responses" => {
                postcard::from_bytes::<Vec<AdminResponse>>(&bytes).is_ok()
            }
            _ => false,
        };
        assert!(ok, "{name} does not decode");
    }
}

#[test]
fn versions_negotiate_to_the_highest_common_one() {
    assert_eq!(negotiate(1, 1), Some(1));
    assert_eq!(negotiate(1, 9), Some(PROTOCOL_VERSION));
    assert_eq!(negotiate(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3), None);
}

/// SPEC §4 item 5 without a fuzzer: random bytes and mutated real messages must decode to an
/// error or a value, never a panic or a huge allocation (postcard checks every length against
/// the bytes left, and serde caps pre-allocation).
#[test]
fn random_and_mutated_frames_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let decode_all = |b: &[u8]| {
        let _ = super::frame::decode_body::<AgentMsg>(b);
        let _ = super::frame::decode_body::<ControllerMsg>(b);
        let _ = super::frame::decode_body::<AdminRequest>(b);
        let _ = super::frame::decode_body::<AdminResponse>(b);
        let _ = super::frame::decode_body::<EnrollRequest>(b);
        let _ = super::frame::decode_body::<EnrollResponse>(b);
    };
    for _ in 0..20_000 {
        let len = (next() % 512) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        decode_all(&bytes);
    }
    for (_, sample) in samples() {
        for _ in 0..500 {
            let mut m = sample.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % m.len().max(1);
                if let Some(b) = m.get_mut(i) {
                    *b ^= 1 << (next() % 8);
                }
            }
            let cut = (next() as usize) % (m.len() + 1);
            decode_all(&m);
            decode_all(&m[..cut]);
        }
    }
}
