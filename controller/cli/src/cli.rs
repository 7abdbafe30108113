//! The command line: clap derive types for the noun-verb tree (SPEC §2.7).
//!
//! Parsing only; turning a parsed command into an admin request lives in `commands`. Value
//! parsers here reject bad operator input (port 0, unknown protocol, zero duration) before any
//! network work, so clap reports them as usage errors (exit 2) naming the flag.
//!
//! Values with a grammar of their own: rates (`vpn_shared::rate`), sizes (`vpn_shared::size`),
//! durations (humantime, never zero) and WHENs ([`moment`]: a duration or a UTC date or time).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use vpn_shared::model::{Protocol, ProxyKind, VlessEngine};
use vpn_shared::proto::admin::Reset;

pub use moment::Moment;

pub mod moment;

/// Operate a VPN fleet through its controller.
#[derive(Debug, Parser)]
#[command(name = "vpn", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Output format; `plain` is tab-separated without a header, for scripts.
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = Format::Table,
        env = "VPN_OUTPUT",
        display_order = 100
    )]
    pub output: Format,

    /// Context file with the controller address and admin credentials
    /// [default: ~/.config/vpn/config.toml].
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "VPN_CONFIG",
        display_order = 101
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Output formats. (Plain comments, not doc comments: clap would list them in every `--help`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    // Aligned columns for people.
    Table,
    // The response payload as pretty JSON.
    Json,
    // The response payload as YAML.
    Yaml,
    // One record per line, tab-separated, no header.
    Plain,
}

/// `vpn tui --theme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ThemeArg {
    Dark,
    Light,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hosts running the agent.
    #[command(subcommand)]
    Servers(ServersCmd),
    /// VPN services deployed on hosts.
    #[command(subcommand)]
    Services(ServicesCmd),
    /// VPN users and their client links.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Addresses and networks blocked on the hosts' service ports.
    #[command(subcommand)]
    Firewall(FirewallCmd),
    /// Fleet summary with health counts.
    Status,
    /// Check the whole fleet; exits 3 when any check warned or failed.
    ///
    /// Checks hosts online and acked, failing resources, certificate expiry, clock skew and
    /// kernel features, as the controller sees them. Exit codes: 0 every check is OK; 3 some
    /// check warned or failed (the output says which); 76 the controller is too old to run
    /// checks; otherwise as for every command (69 unavailable, 78 configuration, ...).
    Doctor,
    /// Live fleet overview in the terminal (hosts, users, events; `?` for keys).
    ///
    /// Keeps working while the controller is away: it says so and reconnects by itself.
    Tui {
        /// Colours for a dark or a light terminal (`t` switches while running).
        #[arg(long, value_enum, default_value_t = ThemeArg::Dark)]
        theme: ThemeArg,
    },
    /// Print a shell completion script (for example `vpn completions bash > /etc/bash_completion.d/vpn`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServersCmd {
    /// Register a host and print the join string for `vpn-agent join`.
    Add {
        /// Host name, unique in the fleet (for example fra-1).
        name: String,
        /// How long the join string stays valid (for example 30m, 1h, 2d).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        expires: Duration,
    },
    /// List hosts.
    List,
    /// Show one host.
    Show { name: String },
    /// Remove a host and revoke its certificate.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ServicesCmd {
    /// Deploy a VPN service on hosts.
    Deploy(DeployArgs),
    /// List services.
    List,
    /// Show one service.
    Show { name: String },
    /// Change a service's bandwidth cap or new-connection rate.
    Edit(EditServiceArgs),
    /// Remove a service from every host it runs on.
    Remove {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Protocol to run (shadowsocks, vless, proxy).
    /// Protocol to run (shadowsocks, vless, wireguard).
    #[arg(value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// First port of the service (1-65535).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// How many ports the service's range holds from --port, one per user (shadowsocks, proxy,
    /// vless on shoes): --port 20000 --ports 20000 is 20000-39999 [default: 1000].
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Option<u16>,
    /// Service name [default: the protocol's name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Container image [default: the driver's image].
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Shadowsocks cipher [default: chacha20-ietf-poly1305].
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
    /// VLESS: the server name clients present (Reality `serverNames`), e.g. www.example.com.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// VLESS: the real TLS 1.3 site Reality borrows handshakes from, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub dest: Option<String>,
    /// VLESS: how many Reality short ids to generate (1-16) [default: 1].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u8).range(1..=16))]
    pub short_ids: Option<u8>,
    /// VLESS: the engine, xray (production) or shoes (a port per user) [default: xray].
    #[arg(long, value_name = "ENGINE", value_parser = parse_engine)]
    pub engine: Option<VlessEngine>,
    /// Proxy: what each user's port speaks, http, socks5 or both (one port, two links)
    /// [default: both].
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    pub kind: Option<ProxyKind>,
    /// WireGuard: the IPv4 tunnel subnet, e.g. 10.66.0.0/16 (each host's server takes its first
    /// address, users the next ones).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,
    /// WireGuard: an IPv6 tunnel subnet as well, e.g. fd66::/64.
    #[arg(long, value_name = "CIDR")]
    pub ipv6_subnet: Option<String>,
    /// WireGuard: DNS servers clients use, comma-separated (1.1.1.1,9.9.9.9).
    #[arg(long, value_name = "IP,…", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// WireGuard: the tunnel MTU (1280-9000) [default: WireGuard's 1420].
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u16).range(1280..=9000))]
    pub mtu: Option<u16>,
    /// Cap the whole service on each host at RATE in each direction (20mbit, 1.5gbit, 10mbps =
    /// 10 MB/s; a plain number is bit/s).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub bandwidth: Option<u64>,
    /// Admit at most N new connections per second from one source address.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub conn_rate: Option<u32>,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["bandwidth", "no_bandwidth", "conn_rate", "no_conn_rate", "image", "default_image", "ports"])
))]
pub struct EditServiceArgs {
    pub name: String,
    /// Cap the whole service on each host at RATE in each direction.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, conflicts_with = "no_bandwidth")]
    pub bandwidth: Option<u64>,
    /// Remove the service's bandwidth cap.
    #[arg(long)]
    pub no_bandwidth: bool,
    /// Admit at most N new connections per second from one source address.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        conflicts_with = "no_conn_rate"
    )]
    pub conn_rate: Option<u32>,
    /// Remove the new-connection rate limit.
    #[arg(long)]
    pub no_conn_rate: bool,
    /// Run the service from IMAGE. Each host creates the new container before it stops the
    /// old one; a replacement that cannot be created leaves the old one serving, and the host
    /// shows as degraded until fixed.
    #[arg(long, value_name = "IMAGE", conflicts_with = "default_image")]
    pub image: Option<String>,
    /// Run the service from the driver's default image again.
    #[arg(long)]
    pub default_image: bool,
    /// Resize the port range to COUNT ports from its first port (which never moves). Growing
    /// is always safe; shrinking is refused while a user holds a port past the new end.
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Option<u16>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Add a user.
    Add(AddUserArgs),
    /// List users.
    List,
    /// Show one user.
    Show { name: String },
    /// Change a user's email, note, bandwidth limit, data limit or expiry.
    Edit(EditUserArgs),
    /// Remove a user from every host.
    Remove {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Cut a user off without deleting them.
    Suspend {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Give a suspended user access again.
    Resume {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Print a user's client links.
    Link {
        name: String,
        /// Only links for this host.
        #[arg(long, value_name = "NAME")]
        server: Option<String>,
        /// Only links for this protocol.
        #[arg(long, value_name = "P", value_parser = parse_protocol)]
        protocol: Option<Protocol>,
        /// Also print each link as a QR code (table output only).
        #[arg(long)]
        qr: bool,
        /// Print only the client artefacts themselves (a WireGuard `.conf`, ready to save).
        #[arg(long, conflicts_with = "qr")]
        conf: bool,
    },
    /// Traffic per user, or per user and server, service or day.
    Usage(UsageArgs),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Only this user [default: every user].
    pub name: Option<String>,
    /// Count from WHEN: a duration back from now (24h, 7d, 1h30m) or a UTC date or time
    /// (2026-12-01, 2026-12-01T10:00:00Z); the controller counts from the start of that hour
    /// [default: all recorded traffic].
    #[arg(long, value_name = "WHEN", value_parser = moment::parse)]
    pub since: Option<Moment>,
    /// One row per user, or per user and server, service or day (UTC).
    #[arg(long, value_enum, value_name = "BY", default_value_t = UsageBy::User)]
    pub by: UsageBy,
}

/// How `users usage` splits traffic. (Plain comments: see [`Format`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UsageBy {
    User,
    Server,
    Service,
    Day,
}

#[derive(Debug, Args)]
pub struct AddUserArgs {
    /// User name, unique in the fleet.
    pub name: String,
    /// Contact address, for operators' records.
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Free-form note for operators.
    #[arg(long, value_name = "T")]
    pub note: Option<String>,
    /// Protocols the user may use, comma-separated [default: all].
    #[arg(long, value_name = "P,...", value_delimiter = ',', value_parser = parse_protocol)]
    pub protocols: Option<Vec<Protocol>>,
    /// Limit the user to RATE in each direction (20mbit, 1.5gbit, 800kbit, 10mbps = 10 MB/s; a
    /// plain number is bit/s) [default: unlimited].
    #[arg(long, value_name = "RATE", value_parser = parse_rate, conflicts_with_all = ["down", "up"])]
    pub bandwidth: Option<u64>,
    /// Limit traffic to the user (download) to RATE.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub down: Option<u64>,
    /// Limit traffic from the user (upload) to RATE.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub up: Option<u64>,
    #[command(flatten)]
    pub quota: QuotaArgs,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// The data limit and time flags of `users add` and `users edit` (SPEC §2.6). Without any of
/// them the requests older controllers know are sent.
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// Data the user may use per reset period, both directions over every host: 50GiB,
    /// 1.5TiB, 500GB (0 allows nothing).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub data_limit: Option<u64>,
    /// When the data limit starts again: calendar periods in the controller's time zone;
    /// `none` counts the user's whole life.
    #[arg(long, value_name = "PERIOD", value_parser = reset_parser())]
    pub reset: Option<Reset>,
    /// Expire the user at WHEN: a duration from now on the controller's clock (30d, 12h) or a
    /// UTC date or time (2027-01-31 is its midnight, 2027-01-31T12:00:00Z); a past time
    /// expires the user at once.
    #[arg(long, value_name = "WHEN", value_parser = moment::parse, conflicts_with = "on_hold")]
    pub expires: Option<Moment>,
    /// Hold the user until their first traffic on any host, then let them use the service for
    /// DURATION (30d, 12h, 1h30m): they expire DURATION after first use.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub on_hold: Option<Duration>,
    /// With --on-hold: start the clock at WHEN even without use (a duration from now, or a
    /// UTC date or time) [default: only at first use].
    #[arg(
        long,
        value_name = "WHEN",
        value_parser = moment::parse,
        requires = "on_hold"
    )]
    pub on_hold_timeout: Option<Moment>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args([
            "email",
            "note",
            "bandwidth",
            "down",
            "up",
            "no_bandwidth",
            "data_limit",
            "no_data_limit",
            "reset",
            "expires",
            "no_expiry",
            "on_hold",
        ])
))]
pub struct EditUserArgs {
    pub name: String,
    /// New contact address ('' clears it).
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// New note ('' clears it).
    #[arg(long, value_name = "T")]
    pub note: Option<String>,
    /// Replace the limit with RATE in each direction.
    #[arg(
        long,
        value_name = "RATE",
        value_parser = parse_rate,
        conflicts_with_all = ["down", "up", "no_bandwidth"]
    )]
    pub bandwidth: Option<u64>,
    /// Replace the limit: download RATE. Needs --up, since the whole limit is replaced.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, requires = "up")]
    pub down: Option<u64>,
    /// Replace the limit: upload RATE. Needs --down, since the whole limit is replaced.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, requires = "down")]
    pub up: Option<u64>,
    /// Remove the user's bandwidth limit.
    #[arg(long, conflicts_with_all = ["down", "up"])]
    pub no_bandwidth: bool,
    // --expires, --on-hold and --no-expiry each replace the user's whole time rule (an expiry
    // or a hold); the data limit and its period change independently.
    #[command(flatten)]
    pub quota: QuotaArgs,
    /// Remove the user's data limit.
    #[arg(long, conflicts_with = "data_limit")]
    pub no_data_limit: bool,
    /// Remove the user's expiry, or the hold --on-hold put them on: they never expire.
    #[arg(long, conflicts_with_all = ["expires", "on_hold"])]
    pub no_expiry: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Subcommand)]
pub enum FirewallCmd {
    /// Block an address or network on every service port of the given hosts.
    Block(FirewallRuleArgs),
    /// Remove the block rule of exactly this scope (--all-servers: the fleet-wide rule only).
    Unblock(FirewallRuleArgs),
    /// List block rules.
    List,
}

#[derive(Debug, Args)]
pub struct FirewallRuleArgs {
    /// IP address or CIDR network: 203.0.113.7, 198.51.100.0/24, 2001:db8::/32.
    #[arg(value_name = "ADDR")]
    pub address: String,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Which hosts a service or user goes to: exactly one of the two flags.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Every host, including hosts added later.
    #[arg(long)]
    pub all_servers: bool,
    /// Only this host; repeat or separate with commas.
    #[arg(long = "server", value_name = "NAME", value_delimiter = ',')]
    pub servers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Return once the change is stored instead of waiting for hosts to apply it.
    #[arg(long)]
    pub no_wait: bool,
}

impl Cli {
    /// Parses the process arguments; usage errors, including the per-protocol ones of
    /// [`Cli::check`], print and exit 2.
    pub fn parse_checked() -> Cli {
        let cli = Cli::parse();
        if let Err(e) = cli.check() {
            e.exit();
        }
        cli
    }

    /// [`Cli::parse_checked`] without exiting and blind to the environment, for tests.
    ///
    /// clap reads each `env = …` variable while the command is built, so `VPN_CONFIG` or
    /// `VPN_OUTPUT` in the shell running the tests would change what they parse (with
    /// `VPN_CONFIG` set, `vpn users` is `MissingSubcommand` instead of help; with
    /// `VPN_OUTPUT=xml`, every command line is refused). The variables are unbound here, so a
    /// test sees exactly its arguments.
    #[cfg(test)]
    pub fn try_parse_checked<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command()
            .mut_args(|a| a.env(None))
            .try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        cli.check()?;
        Ok(cli)
    }

    /// Rules clap's derive cannot state: which deploy flags belong to which protocol, and that
    /// a new user's reset period needs a limit to reset.
    fn check(&self) -> Result<(), clap::Error> {
        match &self.command {
            Command::Services(ServicesCmd::Deploy(d)) => check_deploy(d),
            Command::Users(UsersCmd::Add(a)) => check_add(a),
            _ => Ok(()),
        }
    }
}

/// A usage error (exit 2) of kind `kind`, as clap prints its own.
fn usage_error(kind: clap::error::ErrorKind, msg: String) -> clap::Error {
    use clap::CommandFactory;
    Cli::command().error(kind, msg)
}

/// `--reset` on an existing user may change the period of the limit they have; a new user
/// without `--data-limit` has none, so the period would silently mean nothing.
fn check_add(a: &AddUserArgs) -> Result<(), clap::Error> {
    if a.quota.reset.is_some() && a.quota.data_limit.is_none() {
        let msg = "--reset needs --data-limit: a user without a data limit has nothing to reset";
        return Err(usage_error(
            clap::error::ErrorKind::MissingRequiredArgument,
            msg.into(),
        ));
    }
    Ok(())
}

fn check_deploy(d: &DeployArgs) -> Result<(), clap::Error> {
    use clap::error::ErrorKind;
    let vless_flags = [
        ("--sni", d.sni.is_some()),
        ("--dest", d.dest.is_some()),
        ("--short-ids", d.short_ids.is_some()),
        ("--engine", d.engine.is_some()),
    ];
    let wireguard_flags = [
        ("--subnet", d.subnet.is_some()),
        ("--ipv6-subnet", d.ipv6_subnet.is_some()),
        ("--dns", !d.dns.is_empty()),
        ("--mtu", d.mtu.is_some()),
    ];
    let fail = |kind, msg: String| Err(usage_error(kind, msg));
    if let Some(ports) = d.ports {
        let per_user = match d.protocol {
            Protocol::Shadowsocks | Protocol::Proxy => true,
            Protocol::Vless => d.engine.is_some_and(VlessEngine::port_per_user),
            Protocol::Wireguard => false,
        };
        if !per_user {
            let msg = "--ports applies to services with a port per user (shadowsocks, proxy, \
                       vless --engine shoes); the users of this one share its --port"
                .to_owned();
            return fail(ErrorKind::ArgumentConflict, msg);
        }
        let last = u32::from(d.port) + u32::from(ports) - 1;
        if last > u32::from(u16::MAX) {
            let msg = format!(
                "--ports {ports} from --port {} would end at {last}, past 65535",
                d.port
            );
            return fail(ErrorKind::ValueValidation, msg);
        }
    }
    if d.kind.is_some() && d.protocol != Protocol::Proxy {
        let msg = "--kind applies to proxy services only".to_owned();
        return fail(ErrorKind::ArgumentConflict, msg);
    }
    if d.protocol != Protocol::Wireguard
        && let Some((flag, _)) = wireguard_flags.iter().find(|(_, set)| *set)
    {
        return fail(
            ErrorKind::ArgumentConflict,
            format!("{flag} applies to wireguard services only"),
        );
    }
    match d.protocol {
        Protocol::Shadowsocks => {
            if let Some((flag, _)) = vless_flags.iter().find(|(_, set)| *set) {
                return fail(
                    ErrorKind::ArgumentConflict,
                    format!("{flag} applies to vless services only"),
                );
            }
        }
        Protocol::Wireguard => {
            if let Some((flag, _)) = vless_flags.iter().find(|(_, set)| *set) {
                return fail(
                    ErrorKind::ArgumentConflict,
                    format!("{flag} applies to vless services only"),
                );
            }
            if d.method.is_some() {
                let msg = "--method applies to shadowsocks services only".to_owned();
                return fail(ErrorKind::ArgumentConflict, msg);
            }
            if d.subnet.is_none() {
                let msg = "a wireguard service needs --subnet (e.g. 10.66.0.0/16)".to_owned();
                return fail(ErrorKind::MissingRequiredArgument, msg);
            }
        }
        Protocol::Vless => {
            if d.method.is_some() {
                let msg = "--method applies to shadowsocks services only".to_owned();
                return fail(ErrorKind::ArgumentConflict, msg);
            }
            for (flag, set) in &vless_flags[..2] {
                if !set {
                    let msg = format!("a vless service needs {flag}");
                    return fail(ErrorKind::MissingRequiredArgument, msg);
                }
            }
        }
        Protocol::Proxy => {
            let other = vless_flags
                .iter()
                .find(|(_, set)| *set)
                .map(|(flag, _)| *flag)
                .or(d.method.is_some().then_some("--method"));
            if let Some(flag) = other {
                let msg = format!("{flag} does not apply to proxy services");
                return fail(ErrorKind::ArgumentConflict, msg);
            }
        }
    }
    Ok(())
}

fn parse_kind(s: &str) -> Result<ProxyKind, String> {
    ProxyKind::parse(s).ok_or_else(|| format!("unknown kind `{s}` (expected http, socks5 or both)"))
}

fn parse_engine(s: &str) -> Result<VlessEngine, String> {
    VlessEngine::parse(s).ok_or_else(|| format!("unknown engine `{s}` (expected xray or shoes)"))
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| format!("unknown protocol `{s}`"))
}

fn parse_rate(s: &str) -> Result<u64, String> {
    vpn_shared::rate::parse(s)
}

fn parse_size(s: &str) -> Result<u64, String> {
    vpn_shared::size::parse(s).map_err(|e| e.to_string())
}

/// `none|day|week|month|year`, listed in `--help` and completions.
fn reset_parser() -> impl clap::builder::TypedValueParser<Value = Reset> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    let all = [
        Reset::Never,
        Reset::Day,
        Reset::Week,
        Reset::Month,
        Reset::Year,
    ];
    PossibleValuesParser::new(all.map(Reset::as_str))
        .try_map(|s| Reset::parse(&s).ok_or("unknown reset period"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    if i64::try_from(d.as_secs()).is_err() {
        return Err(format!("`{s}` is too long"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
