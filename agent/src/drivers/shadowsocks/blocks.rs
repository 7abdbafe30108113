//! One ssmanager per block of [`PORTS_PER_MANAGER`] ports (pure).
//!
//! A service's range may hold tens of thousands of users (`vpn services deploy … --ports N`),
//! but one ssmanager cannot serve that many:
//!
//! - Its API answers `list` and `ping` in one UNIX datagram, and a datagram larger than the
//!   sender's socket buffer (`net.core.wmem_default`, 212,992 bytes on common kernels) is never
//!   sent: measured with shadowsocks-rust 1.25, `list` goes silent past about 3,600 ports
//!   (22-character passwords) and the whole service would be reported failing.
//! - Each port holds a TCP and a UDP socket: 20,000 ports are 40,000 descriptors before the first
//!   connection, past the container's open-file limit on many hosts (20,000 here).
//!
//! So ports are split by their offset from the service port into blocks of 1,000: block 0 (the
//! service port up to 999 above it) is the service's own container with the socket
//! `manager.sock`, exactly as before blocks existed, so a service of up to 1,000 users runs as
//! it always did and an agent upgrade recreates nothing. Block `k` is the container
//! `<service container>.ports-<first>-<last>` with the socket `manager-<first>.sock` in the same
//! run directory; it exists while a user holds a port in it. A `list` of 1,000 ports is about
//! 55 KB, and a block needs about 2,000 descriptors plus its connections.

use std::path::{Path, PathBuf};

/// Ports one ssmanager serves.
pub const PORTS_PER_MANAGER: u16 = 1000;

/// One ssmanager's share of a service's range: ports `first ..= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// 0 for the service's own container.
    pub index: u16,
    pub first: u16,
    pub last: u16,
}

impl Block {
    /// The block that serves `port` of a service whose first port is `service_port`. A port
    /// below the service port (never handed out by the controller) goes to block 0.
    pub fn of(service_port: u16, port: u16) -> Block {
        let index = port.saturating_sub(service_port) / PORTS_PER_MANAGER;
        Block::at(service_port, index)
    }

    /// Block number `index` of a service whose first port is `service_port`.
    pub fn at(service_port: u16, index: u16) -> Block {
        let first = u32::from(service_port) + u32::from(index) * u32::from(PORTS_PER_MANAGER);
        let last = first + u32::from(PORTS_PER_MANAGER) - 1;
        Block {
            index,
            first: u16::try_from(first).unwrap_or(u16::MAX),
            last: u16::try_from(last).unwrap_or(u16::MAX),
        }
    }

    /// Whether this is the service's own container.
    pub fn is_first(&self) -> bool {
        self.index == 0
    }

    /// The container of this block, from the service's own container name.
    pub fn container(&self, service_container: &str) -> String {
        if self.is_first() {
            service_container.to_owned()
        } else {
            format!("{service_container}.ports-{}-{}", self.first, self.last)
        }
    }

    /// The manager socket of this block in the service's run directory.
    pub fn socket(&self, run_dir: &Path) -> PathBuf {
        if self.is_first() {
            run_dir.join("manager.sock")
        } else {
            run_dir.join(format!("manager-{}.sock", self.first))
        }
    }

    /// How this block is named in errors: nothing for the service's own manager (its errors
    /// read as before), `manager of ports A-B: ` for the others.
    pub fn prefix(&self) -> String {
        if self.is_first() {
            String::new()
        } else {
            format!("manager of ports {}-{}: ", self.first, self.last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_count_from_the_service_port() {
        assert_eq!(
            Block::of(20_000, 20_000),
            Block {
                index: 0,
                first: 20_000,
                last: 20_999
            }
        );
        assert_eq!(Block::of(20_000, 20_999).index, 0);
        assert_eq!(Block::of(20_000, 21_000).index, 1);
        let top = Block::of(20_000, 39_999);
        assert_eq!((top.index, top.first, top.last), (19, 39_000, 39_999));
        // The last block of a range ending at 65535 is cut at 65535, not wrapped.
        let end = Block::of(45_536, 65_535);
        assert_eq!((end.index, end.first, end.last), (19, 64_536, 65_535));
        let odd = Block::of(65_000, 65_535);
        assert_eq!((odd.index, odd.first, odd.last), (0, 65_000, 65_535));
        assert_eq!(Block::of(20_000, 80).index, 0, "below the range: block 0");
    }

    #[test]
    fn block_zero_keeps_the_names_a_service_always_had() {
        let run = Path::new("/var/lib/vpn-agent/run/ss");
        let zero = Block::of(8388, 8388);
        assert_eq!(zero.container("vpn-h1-ss"), "vpn-h1-ss");
        assert_eq!(zero.socket(run), run.join("manager.sock"));
        assert_eq!(zero.prefix(), "");
        let two = Block::of(8388, 10_388);
        assert_eq!(two.container("vpn-h1-ss"), "vpn-h1-ss.ports-10388-11387");
        assert_eq!(two.socket(run), run.join("manager-10388.sock"));
        assert_eq!(two.prefix(), "manager of ports 10388-11387: ");
    }
}
