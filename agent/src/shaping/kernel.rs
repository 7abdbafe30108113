//! Which kernel features shaping needs, which exist here, and what a missing one disables.
//!
//! The probe reads the kernel's build configuration (`/proc/config.gz`, else
//! `/boot/config-<release>`): a feature is built in (`=y`), a module (`=m`, loaded on first use
//! by `tc`), or missing. Without a readable configuration it falls back to `/sys/module` for
//! loaded modules and otherwise reports "unknown": the required features are then assumed
//! present (a failing `tc` says so loudly), but the two optional mark features are assumed
//! absent, because a u32 `match mark` on a kernel without `CONFIG_CLS_U32_MARK` is accepted and
//! silently matches everything.

use std::fmt;

use tracing::{info, warn};

use super::render::Capabilities;

/// A kernel feature shaping uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// `sch_htb`: the class tree.
    Htb,
    /// `cls_u32`: matching ports, addresses and (with the next one) marks.
    U32,
    /// u32 `match mark`.
    U32Mark,
    /// Filter actions at all (`CONFIG_NET_CLS_ACT`).
    Actions,
    /// `act_mirred`: redirecting ingress traffic to the IFB device.
    Mirred,
    /// `sch_ingress`: the ingress hook the redirect hangs on.
    Ingress,
    /// `ifb`: the device upload traffic is shaped on.
    Ifb,
    /// `act_connmark`: restoring the connection mark on ingress.
    Connmark,
}

impl Feature {
    pub const ALL: [Feature; 8] = [
        Feature::Htb,
        Feature::U32,
        Feature::U32Mark,
        Feature::Actions,
        Feature::Mirred,
        Feature::Ingress,
        Feature::Ifb,
        Feature::Connmark,
    ];

    /// The kernel configuration option.
    pub fn config(self) -> &'static str {
        match self {
            Feature::Htb => "CONFIG_NET_SCH_HTB",
            Feature::U32 => "CONFIG_NET_CLS_U32",
            Feature::U32Mark => "CONFIG_CLS_U32_MARK",
            Feature::Actions => "CONFIG_NET_CLS_ACT",
            Feature::Mirred => "CONFIG_NET_ACT_MIRRED",
            Feature::Ingress => "CONFIG_NET_SCH_INGRESS",
            Feature::Ifb => "CONFIG_IFB",
            Feature::Connmark => "CONFIG_NET_ACT_CONNMARK",
        }
    }

    /// The module name (as in `/sys/module`), or the one it is part of.
    pub fn module(self) -> &'static str {
        match self {
            Feature::Htb => "sch_htb",
            Feature::U32 | Feature::U32Mark => "cls_u32",
            Feature::Actions => "act_api",
            Feature::Mirred => "act_mirred",
            Feature::Ingress => "sch_ingress",
            Feature::Ifb => "ifb",
            Feature::Connmark => "act_connmark",
        }
    }

    /// What is lost without the feature.
    pub fn disables(self) -> &'static str {
        match self {
            Feature::Htb | Feature::U32 => "all bandwidth limits",
            Feature::Actions | Feature::Mirred | Feature::Ingress | Feature::Ifb => {
                "upload limits (traffic from users)"
            }
            Feature::U32Mark => "limits of users matched by firewall mark (VLESS through Xray)",
            Feature::Connmark => {
                "ingress limits of mark-matched users (the download of VLESS users through Xray)"
            }
        }
    }
}

/// Whether a feature is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    BuiltIn,
    Module,
    Missing,
    /// The kernel configuration could not be read.
    Unknown,
}

impl Presence {
    fn known_present(self) -> bool {
        matches!(self, Presence::BuiltIn | Presence::Module)
    }

    fn maybe_present(self) -> bool {
        self != Presence::Missing
    }

    fn as_str(self) -> &'static str {
        match self {
            Presence::BuiltIn => "built in",
            Presence::Module => "module",
            Presence::Missing => "missing",
            Presence::Unknown => "unknown",
        }
    }
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelReport {
    /// Where the answer came from (`/proc/config.gz`, …).
    pub source: String,
    pub features: Vec<(Feature, Presence)>,
}

impl KernelReport {
    /// From the text of a kernel configuration.
    pub fn from_config(text: &str, source: &str) -> KernelReport {
        let features = Feature::ALL
            .into_iter()
            .map(|f| {
                let set = format!("{}=", f.config());
                let value = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix(set.as_str()).map(str::trim));
                let p = match value {
                    Some("y") => Presence::BuiltIn,
                    Some("m") => Presence::Module,
                    _ => Presence::Missing,
                };
                (f, p)
            })
            .collect();
        KernelReport {
            source: source.to_owned(),
            features,
        }
    }

    /// Without a configuration: what `/sys/module` lists is present, the rest unknown.
    pub fn from_loaded_modules(loaded: &[&str], source: &str) -> KernelReport {
        let features = Feature::ALL
            .into_iter()
            .map(|f| {
                // A loaded cls_u32 says nothing about its mark support.
                let p = if f != Feature::U32Mark && loaded.contains(&f.module()) {
                    Presence::Module
                } else {
                    Presence::Unknown
                };
                (f, p)
            })
            .collect();
        KernelReport {
            source: source.to_owned(),
            features,
        }
    }

    pub fn presence(&self, f: Feature) -> Presence {
        self.features
            .iter()
            .find(|(g, _)| *g == f)
            .map_or(Presence::Unknown, |(_, p)| *p)
    }

    /// Features known to be missing.
    pub fn missing(&self) -> Vec<Feature> {
        self.features
            .iter()
            .filter(|(_, p)| *p == Presence::Missing)
            .map(|(f, _)| *f)
            .collect()
    }

    /// What rendering may rely on.
    pub fn capabilities(&self) -> Capabilities {
        let maybe = |f| self.presence(f).maybe_present();
        let known = |f| self.presence(f).known_present();
        let egress = maybe(Feature::Htb) && maybe(Feature::U32);
        Capabilities {
            egress,
            ingress: egress
                && maybe(Feature::Actions)
                && maybe(Feature::Mirred)
                && maybe(Feature::Ingress)
                && maybe(Feature::Ifb),
            mark: egress && known(Feature::U32Mark),
            connmark: known(Feature::Actions) && known(Feature::Connmark),
        }
    }

    /// One sentence per feature that is missing (or unknown where that disables something).
    pub fn effects(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|(f, p)| {
                *p == Presence::Missing
                    || (*p == Presence::Unknown
                        && matches!(f, Feature::U32Mark | Feature::Connmark))
            })
            .map(|(f, p)| {
                format!(
                    "{} ({}) {}: disables {}",
                    f.module(),
                    f.config(),
                    p.as_str(),
                    f.disables()
                )
            })
            .collect()
    }

    /// Logs the report: one warning per disabled capability.
    pub fn log(&self) {
        let caps = self.capabilities();
        info!(
            source = %self.source,
            download = caps.egress,
            upload = caps.ingress,
            mark = caps.mark,
            connmark = caps.connmark,
            "kernel shaping features probed"
        );
        for (f, p) in &self.features {
            if *p == Presence::Missing
                || (*p == Presence::Unknown && matches!(f, Feature::U32Mark | Feature::Connmark))
            {
                warn!(
                    module = f.module(),
                    config = f.config(),
                    presence = p.as_str(),
                    disables = f.disables(),
                    "kernel feature unavailable"
                );
            }
        }
    }
}

impl fmt::Display for KernelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel features for bandwidth limits ({}):", self.source)?;
        for (feat, p) in &self.features {
            writeln!(
                f,
                "  {:<13} {:<24} {}",
                feat.module(),
                feat.config(),
                p.as_str()
            )?;
        }
        let effects = self.effects();
        if effects.is_empty() {
            writeln!(f, "everything available")?;
        }
        for e in effects {
            writeln!(f, "  ! {e}")?;
        }
        Ok(())
    }
}

/// Probes this host's kernel.
pub async fn probe() -> KernelReport {
    if let Ok(out) = tokio::process::Command::new("gzip")
        .args(["-dc", "/proc/config.gz"])
        .output()
        .await
        && out.status.success()
        && !out.stdout.is_empty()
    {
        return KernelReport::from_config(&String::from_utf8_lossy(&out.stdout), "/proc/config.gz");
    }
    let release = tokio::fs::read_to_string("/proc/sys/kernel/osrelease")
        .await
        .unwrap_or_default();
    let boot = format!("/boot/config-{}", release.trim());
    if let Ok(text) = tokio::fs::read_to_string(&boot).await {
        return KernelReport::from_config(&text, &boot);
    }
    let mut loaded = Vec::new();
    for f in Feature::ALL {
        if tokio::fs::metadata(format!("/sys/module/{}", f.module()))
            .await
            .is_ok()
        {
            loaded.push(f.module());
        }
    }
    KernelReport::from_loaded_modules(&loaded, "/sys/module (no kernel configuration found)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relevant lines of this project's machines' kernel (6.18, monolithic).
    const HERE: &str = "CONFIG_NET_SCH_HTB=y\n# CONFIG_NET_SCH_SFQ is not set\n\
CONFIG_NET_SCH_INGRESS=y\nCONFIG_NET_CLS_U32=y\n# CONFIG_CLS_U32_MARK is not set\n\
CONFIG_NET_CLS_ACT=y\nCONFIG_NET_ACT_MIRRED=y\n# CONFIG_NET_ACT_CONNMARK is not set\n\
CONFIG_IFB=y\n";

    #[test]
    fn this_kernel_shapes_both_ways_but_not_by_mark() {
        let r = KernelReport::from_config(HERE, "/proc/config.gz");
        assert_eq!(r.missing(), vec![Feature::U32Mark, Feature::Connmark]);
        assert_eq!(
            r.capabilities(),
            Capabilities {
                egress: true,
                ingress: true,
                mark: false,
                connmark: false
            }
        );
    }

    #[test]
    fn the_report_reads_well() {
        let r = KernelReport::from_config(HERE, "/proc/config.gz");
        let expected = "\
kernel features for bandwidth limits (/proc/config.gz):
  sch_htb       CONFIG_NET_SCH_HTB       built in
  cls_u32       CONFIG_NET_CLS_U32       built in
  cls_u32       CONFIG_CLS_U32_MARK      missing
  act_api       CONFIG_NET_CLS_ACT       built in
  act_mirred    CONFIG_NET_ACT_MIRRED    built in
  sch_ingress   CONFIG_NET_SCH_INGRESS   built in
  ifb           CONFIG_IFB               built in
  act_connmark  CONFIG_NET_ACT_CONNMARK  missing
  ! cls_u32 (CONFIG_CLS_U32_MARK) missing: disables limits of users matched by firewall mark (VLESS through Xray)
  ! act_connmark (CONFIG_NET_ACT_CONNMARK) missing: disables ingress limits of mark-matched users (the download of VLESS users through Xray)
";
        assert_eq!(r.to_string(), expected);
    }

    #[test]
    fn modules_count_and_a_missing_htb_disables_everything() {
        let r = KernelReport::from_config(
            "CONFIG_NET_SCH_HTB=m\nCONFIG_NET_CLS_U32=m\nCONFIG_CLS_U32_MARK=y\n",
            "x",
        );
        assert_eq!(r.presence(Feature::Htb), Presence::Module);
        let c = r.capabilities();
        assert!(c.egress && c.mark && !c.ingress);

        let none = KernelReport::from_config("# CONFIG_NET_SCH_HTB is not set\n", "x");
        assert!(!none.capabilities().egress);
        assert!(none.effects()[0].contains("all bandwidth limits"));
    }

    #[test]
    fn unknown_assumes_the_basics_but_never_the_mark() {
        let r = KernelReport::from_loaded_modules(&["sch_htb"], "/sys/module");
        assert_eq!(r.presence(Feature::Htb), Presence::Module);
        assert_eq!(r.presence(Feature::Ifb), Presence::Unknown);
        let c = r.capabilities();
        assert!(c.egress && c.ingress && !c.mark && !c.connmark);
        assert_eq!(r.effects().len(), 2);
    }
}
