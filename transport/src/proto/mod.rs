//! The ipfailover wire protocol: pure encode/decode, no I/O, no clock.
//!
//! This module owns the byte layout of every frame exchanged between the
//! daemons, the CLI and transportd, and the encoding of every payload. It must
//! never do I/O or look at a clock; the client library, the in-process router
//! and transportd build on it.
//!
//! # Frame layout
//!
//! A frame is a fixed 40-byte header followed by `length` payload bytes. Every
//! header field is big-endian ("network order"), so the same bytes mean the same
//! thing on every host (CTDB copies host-order structs; we must not).
//!
//! ```text
//! off size field
//! 0   4    magic        0x4950_464F ("IPFO")
//! 4   1    version      1
//! 5   1    kind         1 Request, 2 Reply, 3 Event, 4 Error
//! 6   2    flags        0 (reserved, must be 0 in version 1)
//! 8   4    length       payload length in bytes, <= MAX_PAYLOAD (4 MiB)
//! 12  4    src_pnn
//! 16  2    src_service
//! 18  2    dst_service
//! 20  4    dst_pnn      ALL_NODES = 0xFFFF_FFFF, LOCAL = 0xFFFF_FFFE
//! 24  8    request_id   chosen by the requester, echoed in the Reply/Error
//! 32  4    opcode
//! 36  4    reserved     0
//! ```
//!
//! # Payload encoding
//!
//! Every payload in the project is a serde value encoded with
//! [postcard](https://docs.rs/postcard) (varint integers, length-prefixed
//! strings and sequences, enums as a varint variant index). Use
//! [`encode_payload`] / [`decode_payload`]; decoding rejects trailing bytes. An
//! `Error` frame carries a [`RemoteError`].
//!
//! # Contract
//!
//! Decoding any byte string returns a value or a typed error; it never panics.
//! [`check`] validates the header as soon as 40 bytes are present, so an
//! oversized length is refused before any payload is buffered; frame decoding
//! allocates at most `MAX_PAYLOAD` bytes and only after that check.
//! [`check`] tells an incomplete frame ([`Check::Incomplete`]) apart from an
//! invalid one (`Err`).

pub mod control;
mod error;
mod frame;
pub mod header;
pub mod service;

pub use error::{DecodeError, EncodeError, ErrorCode, PayloadError, RemoteError};
pub use frame::{check, decode_payload, encode_frame, encode_payload, Check, FrameRef, Message};
pub use header::{Header, HeaderRepr, Kind};
pub use service::{Address, ALL_NODES, BROADCAST_SERVICE, LOCAL};

/// The frame magic, "IPFO" in ASCII.
pub const MAGIC: u32 = 0x4950_464F;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 40;
/// Largest payload a frame may carry (4 MiB).
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;
/// Largest whole frame (header plus payload).
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;
