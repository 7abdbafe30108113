//! Protocol drivers: what container a service needs and how its users are changed hot.
//!
//! Each driver has a pure half (render a [`ContainerSpec`](crate::apply::docker::ContainerSpec),
//! plan user changes) that unit tests cover without Docker, and a thin async half that talks to
//! the engine's own API inside the container.
//!
//! - [`shadowsocks`]: shadowsocks-rust's `ssmanager`, one port per user.

pub mod shadowsocks;
pub mod vless;

/// Resource name of a service in [`ResourceResult`](vpn_shared::proto::ResourceResult)s.
pub fn service_resource(service: &str) -> String {
    format!("service/{service}")
}

/// Resource name of one user's access to one service.
pub fn user_resource(user: &str, service: &str) -> String {
    format!("user/{user}@{service}")
}

/// Why a driver could not render or apply a service.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The service's options are for another protocol than its driver.
    #[error("service {service} has options of another protocol")]
    WrongOptions { service: String },
    /// The cipher is not one the engine and Outline clients both accept.
    #[error("service {service}: unsupported shadowsocks method {method}")]
    UnsupportedMethod { service: String, method: String },
    /// A path Docker's bind syntax cannot carry (it splits on `:`).
    #[error("path {0} cannot be bind-mounted (contains ':')")]
    BadPath(std::path::PathBuf),
}
