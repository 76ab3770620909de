//! Typed errors of the protocol layer, and [`RemoteError`], the payload of an
//! `Error` frame.

use serde::{Deserialize, Serialize};

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer ends before the frame does.
    #[error("truncated frame: have {have} bytes, need {need}")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes the header (or header plus payload) needs.
        need: usize,
    },
    /// The first four bytes are not "IPFO".
    #[error("bad magic {0:#010x} (expected 0x4950464f)")]
    BadMagic(u32),
    /// A protocol version this crate does not speak.
    #[error("unsupported protocol version {0} (expected 1)")]
    BadVersion(u8),
    /// A message kind this version does not know.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Flags must be zero in version 1.
    #[error("non-zero flags {0:#06x}")]
    NonZeroFlags(u16),
    /// The reserved field must be zero in version 1.
    #[error("non-zero reserved field {0:#010x}")]
    NonZeroReserved(u32),
    /// The payload length exceeds the limit.
    #[error("payload length {length} exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Length announced by the header.
        length: u32,
        /// The limit ([`super::MAX_PAYLOAD`]).
        max: usize,
    },
    /// Bytes follow a complete frame where exactly one frame was expected.
    #[error("{extra} trailing bytes after the frame")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
}

/// Why a frame cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload is larger than [`super::MAX_PAYLOAD`].
    #[error("payload of {length} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Payload length.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// The output buffer cannot hold the header.
    #[error("buffer of {have} bytes is too small, need {need}")]
    BufferTooSmall {
        /// Buffer length.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// Why a payload cannot be encoded or decoded (postcard).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Serialization failed.
    #[error("cannot encode {type_name}: {source}")]
    Encode {
        /// The Rust type being encoded.
        type_name: &'static str,
        /// Postcard's reason.
        #[source]
        source: postcard::Error,
    },
    /// Deserialization failed (truncated or malformed payload).
    #[error("cannot decode {type_name}: {source}")]
    Decode {
        /// The Rust type expected.
        type_name: &'static str,
        /// Postcard's reason.
        #[source]
        source: postcard::Error,
    },
    /// The payload decoded but bytes were left over.
    #[error("{extra} trailing bytes after {type_name}")]
    Trailing {
        /// The Rust type decoded.
        type_name: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// The encoded payload is larger than [`super::MAX_PAYLOAD`].
    #[error("encoded {type_name} is {length} bytes, over the limit of {max}")]
    TooLarge {
        /// The Rust type encoded.
        type_name: &'static str,
        /// Encoded length.
        length: usize,
        /// The limit.
        max: usize,
    },
}

/// The reason code of an [`RemoteError`]. Travels as a `u16`; codes this
/// version does not know decode as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum ErrorCode {
    /// No service with that id is registered on the destination node.
    UnknownService,
    /// The destination node is not connected.
    NodeUnreachable,
    /// The service does not handle that opcode.
    UnknownOpcode,
    /// The payload could not be decoded or is invalid.
    BadRequest,
    /// The request was understood and refused (e.g. duplicate registration).
    Refused,
    /// The service failed while handling the request.
    Internal,
    /// The service is shutting down.
    ShuttingDown,
    /// A code this version does not know.
    Unknown(u16),
}

impl From<u16> for ErrorCode {
    fn from(value: u16) -> Self {
        match value {
            1 => ErrorCode::UnknownService,
            2 => ErrorCode::NodeUnreachable,
            3 => ErrorCode::UnknownOpcode,
            4 => ErrorCode::BadRequest,
            5 => ErrorCode::Refused,
            6 => ErrorCode::Internal,
            7 => ErrorCode::ShuttingDown,
            other => ErrorCode::Unknown(other),
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::UnknownService => 1,
            ErrorCode::NodeUnreachable => 2,
            ErrorCode::UnknownOpcode => 3,
            ErrorCode::BadRequest => 4,
            ErrorCode::Refused => 5,
            ErrorCode::Internal => 6,
            ErrorCode::ShuttingDown => 7,
            ErrorCode::Unknown(other) => other,
        }
    }
}

/// The payload of an `Error` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RemoteError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail (names the peer, service, opcode...).
    pub message: String,
}

impl RemoteError {
    /// A remote error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RemoteError {
            code,
            message: message.into(),
        }
    }
}
