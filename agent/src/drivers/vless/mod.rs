//! VLESS + Reality. Xray is the production engine; [`shoes`] is the second engine, the one the
//! tests can run here for a real Reality handshake from the very link the controller printed.

pub mod shoes;
