//! The few protobuf messages of the Xray API this client sends and reads, written by hand so the
//! build needs no `protoc`.
//!
//! Field numbers and types are those of Xray-core (`XTLS/Xray-core`, checked at commit
//! `2323273e`) and identical in v2ray-core v4.34.0 (`v2fly/v2ray-core`, tag `v4.34.0`):
//!
//! | message | proto file |
//! |---|---|
//! | `TypedMessage` | `common/serial/typed_message.proto` |
//! | `User` | `common/protocol/user.proto` |
//! | `Account` (VLESS) | `proxy/vless/account.proto` |
//! | `AlterInboundRequest`, `AddUserOperation`, `RemoveUserOperation` | `app/proxyman/command/command.proto` |
//! | `GetStatsRequest`, `QueryStatsRequest`, `Stat`, `SysStatsResponse` | `app/stats/command/command.proto` |
//!
//! Only the package names differ between the two engines (`xray.…` against `v2ray.core.…`);
//! they appear on the wire in gRPC paths and in [`TypedMessage::type`] strings, never in these
//! encodings. Fields this client never sets or reads are left out: protobuf decoders skip
//! unknown fields, and an absent field is its default.

/// `common.serial.TypedMessage`: a message packed with its full protobuf type name.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypedMessage {
    /// Full name of the packed message type, for example `xray.proxy.vless.Account`.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// The packed message's own encoding.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `common.protocol.User`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct User {
    /// Policy level; the stats switches of the engine's `policy.levels` apply per level.
    #[prost(uint32, tag = "1")]
    pub level: u32,
    /// The user's key in the engine: removal and the stats counter names use it.
    #[prost(string, tag = "2")]
    pub email: String,
    /// The protocol's account, for example a [`VlessAccount`].
    #[prost(message, optional, tag = "3")]
    pub account: Option<TypedMessage>,
}

/// `proxy.vless.Account` (Xray also has xorMode, seconds, padding, reverse, testpre and
/// testseed at 4–9; unset, they take the engine's defaults).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VlessAccount {
    /// The user's UUID in canonical form.
    #[prost(string, tag = "1")]
    pub id: String,
    /// `xtls-rprx-vision`, or empty for none.
    #[prost(string, tag = "2")]
    pub flow: String,
    /// Must stay empty for users of an inbound (Xray's own config loader refuses a value there).
    #[prost(string, tag = "3")]
    pub encryption: String,
}

/// `app.proxyman.command.AlterInboundRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterInboundRequest {
    /// Tag of the inbound to change.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// An [`AddUserOperation`] or a [`RemoveUserOperation`], packed.
    #[prost(message, optional, tag = "2")]
    pub operation: Option<TypedMessage>,
}

/// `app.proxyman.command.AlterInboundResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlterInboundResponse {}

/// `app.proxyman.command.AddUserOperation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddUserOperation {
    #[prost(message, optional, tag = "1")]
    pub user: Option<User>,
}

/// `app.proxyman.command.RemoveUserOperation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RemoveUserOperation {
    #[prost(string, tag = "1")]
    pub email: String,
}

/// `app.stats.command.QueryStatsRequest`: every counter whose name *contains* `pattern` (a
/// substring match in both engines, not a glob or regex).
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryStatsRequest {
    #[prost(string, tag = "1")]
    pub pattern: String,
    /// Zero each counter after reading it. This client always sends `false`.
    #[prost(bool, tag = "2")]
    pub reset: bool,
}

/// `app.stats.command.QueryStatsResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryStatsResponse {
    #[prost(message, repeated, tag = "1")]
    pub stat: Vec<Stat>,
}

/// `app.stats.command.Stat`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stat {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Bytes since the counter was created (or last reset); signed on the wire.
    #[prost(int64, tag = "2")]
    pub value: i64,
}

/// `app.stats.command.SysStatsRequest` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysStatsRequest {}

/// `app.stats.command.SysStatsResponse`, only the field this client reads (memory figures at
/// 1–9 are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SysStatsResponse {
    /// Whole seconds since the engine's stats service started, that is since the engine started.
    #[prost(uint32, tag = "10")]
    pub uptime: u32,
}
