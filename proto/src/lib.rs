//! Palisade's wire protocol and the TLS identity rules shared by the manager,
//! the agent and `palisadectl`.
//!
//! # Layout
//!
//! - [`v1`]: the generated protobuf and gRPC code (`proto/palisade/v1/palisade.proto`),
//!   committed under `src/gen/` so that no build needs `protoc`; a test
//!   regenerates it and fails on any difference.
//! - [`action`]: a command's add or delete, one type on both sides.
//! - [`codec`]: the services' gRPC codec (prost's, with small buffers).
//! - [`identity`]: how a certificate names an agent, an operator or the
//!   manager, and how to read that back from a peer certificate.
#![forbid(unsafe_code)]

pub mod action;
pub mod codec;
pub mod identity;

/// The type of an event's line ([`v1::Event::line`]): a shared slice of
/// the received message, so that decoding a batch copies no line.
pub use prost::bytes::Bytes;

/// The generated code for package `palisade.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!("gen/palisade.v1.rs");
}

/// The most alerts one `ListAlerts` call answers; a client pages on with
/// `before_id` for more.
pub const MAX_ALERTS_PER_PAGE: u32 = 10_000;

/// The revision of the protocol this build speaks; sent in `Hello` and
/// `Welcome`. Bump it when a change needs both sides to know.
pub const PROTOCOL_VERSION: u32 = 1;
