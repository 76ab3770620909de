//! The 40-byte frame header: a checked view over bytes ([`Header`]) and a typed
//! value ([`HeaderRepr`]).
//!
//! [`Header::new_checked`] guarantees the buffer holds at least
//! [`HEADER_LEN`] bytes, so no accessor or setter can panic. Routers read and
//! rewrite addresses through the view without decoding the payload or
//! allocating. [`Header::check`] validates magic, version, kind, flags,
//! reserved field and the length limit.

use super::error::{DecodeError, EncodeError};
use super::service::Address;
use super::{HEADER_LEN, MAGIC, MAX_PAYLOAD, VERSION};

mod field {
    use core::ops::Range;

    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const FLAGS: Range<usize> = 6..8;
    pub const LENGTH: Range<usize> = 8..12;
    pub const SRC_PNN: Range<usize> = 12..16;
    pub const SRC_SERVICE: Range<usize> = 16..18;
    pub const DST_SERVICE: Range<usize> = 18..20;
    pub const DST_PNN: Range<usize> = 20..24;
    pub const REQUEST_ID: Range<usize> = 24..32;
    pub const OPCODE: Range<usize> = 32..36;
    pub const RESERVED: Range<usize> = 36..40;
}

/// The message kind (header byte 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request; the receiver answers with a `Reply` or an `Error`.
    Request,
    /// The successful answer to a request (same `request_id`).
    Reply,
    /// A one-way message (also used for broadcasts).
    Event,
    /// The failed answer to a request; payload is a [`super::RemoteError`].
    Error,
    /// A kind this version does not know; routers reject such frames.
    Unknown(u8),
}

impl From<u8> for Kind {
    fn from(value: u8) -> Self {
        match value {
            1 => Kind::Request,
            2 => Kind::Reply,
            3 => Kind::Event,
            4 => Kind::Error,
            other => Kind::Unknown(other),
        }
    }
}

impl From<Kind> for u8 {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Request => 1,
            Kind::Reply => 2,
            Kind::Event => 3,
            Kind::Error => 4,
            Kind::Unknown(other) => other,
        }
    }
}

/// A read (and, for `AsMut` buffers, write) view of a frame header.
///
/// Holds at least [`HEADER_LEN`] bytes (checked at construction); bytes after
/// the header (the payload) are ignored by every accessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` after checking it is long enough for a header.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if `buffer` is shorter than [`HEADER_LEN`].
    /// The field values are not validated: see [`Header::check`].
    pub fn new_checked(buffer: T) -> Result<Self, DecodeError> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DecodeError::Truncated {
                have: len,
                need: HEADER_LEN,
            });
        }
        Ok(Header { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The header bytes (exactly [`HEADER_LEN`]).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    fn u16_at(&self, range: core::ops::Range<usize>) -> u16 {
        let b = &self.buffer.as_ref()[range];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn u32_at(&self, range: core::ops::Range<usize>) -> u32 {
        let b = &self.buffer.as_ref()[range];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The magic field (should be [`MAGIC`]).
    pub fn magic(&self) -> u32 {
        self.u32_at(field::MAGIC)
    }

    /// The protocol version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    /// The message kind.
    pub fn kind(&self) -> Kind {
        Kind::from(self.buffer.as_ref()[field::KIND])
    }

    /// The flags field (0 in version 1).
    pub fn flags(&self) -> u16 {
        self.u16_at(field::FLAGS)
    }

    /// The payload length field, as sent (not yet checked against the limit).
    pub fn length(&self) -> u32 {
        self.u32_at(field::LENGTH)
    }

    /// The source node number.
    pub fn src_pnn(&self) -> u32 {
        self.u32_at(field::SRC_PNN)
    }

    /// The source service id.
    pub fn src_service(&self) -> u16 {
        self.u16_at(field::SRC_SERVICE)
    }

    /// The destination service id.
    pub fn dst_service(&self) -> u16 {
        self.u16_at(field::DST_SERVICE)
    }

    /// The destination node number (may be [`super::ALL_NODES`] or [`super::LOCAL`]).
    pub fn dst_pnn(&self) -> u32 {
        self.u32_at(field::DST_PNN)
    }

    /// The source address `(src_pnn, src_service)`.
    pub fn src(&self) -> Address {
        Address::new(self.src_pnn(), self.src_service())
    }

    /// The destination address `(dst_pnn, dst_service)`.
    pub fn dst(&self) -> Address {
        Address::new(self.dst_pnn(), self.dst_service())
    }

    /// The request id.
    pub fn request_id(&self) -> u64 {
        let b = &self.buffer.as_ref()[field::REQUEST_ID];
        u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The opcode.
    pub fn opcode(&self) -> u32 {
        self.u32_at(field::OPCODE)
    }

    /// The reserved field (0 in version 1).
    pub fn reserved(&self) -> u32 {
        self.u32_at(field::RESERVED)
    }

    /// The payload length as a `usize`, after validation of the whole header.
    ///
    /// # Errors
    /// As [`Header::check`].
    pub fn payload_len(&self) -> Result<usize, DecodeError> {
        self.check()?;
        // check() bounded the length by MAX_PAYLOAD, which fits any usize >= 32 bits.
        usize::try_from(self.length()).map_err(|_| DecodeError::PayloadTooLarge {
            length: self.length(),
            max: MAX_PAYLOAD,
        })
    }

    /// Validates every field that version 1 constrains.
    ///
    /// # Errors
    /// The first problem found, in header order: [`DecodeError::BadMagic`],
    /// [`DecodeError::BadVersion`], [`DecodeError::UnknownKind`],
    /// [`DecodeError::NonZeroFlags`], [`DecodeError::PayloadTooLarge`],
    /// [`DecodeError::NonZeroReserved`].
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.magic() != MAGIC {
            return Err(DecodeError::BadMagic(self.magic()));
        }
        if self.version() != VERSION {
            return Err(DecodeError::BadVersion(self.version()));
        }
        if let Kind::Unknown(k) = self.kind() {
            return Err(DecodeError::UnknownKind(k));
        }
        if self.flags() != 0 {
            return Err(DecodeError::NonZeroFlags(self.flags()));
        }
        let too_large = usize::try_from(self.length()).map_or(true, |l| l > MAX_PAYLOAD);
        if too_large {
            return Err(DecodeError::PayloadTooLarge {
                length: self.length(),
                max: MAX_PAYLOAD,
            });
        }
        if self.reserved() != 0 {
            return Err(DecodeError::NonZeroReserved(self.reserved()));
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn put(&mut self, range: core::ops::Range<usize>, bytes: &[u8]) {
        self.buffer.as_mut()[range].copy_from_slice(bytes);
    }

    /// Sets the magic field.
    pub fn set_magic(&mut self, value: u32) {
        self.put(field::MAGIC, &value.to_be_bytes());
    }

    /// Sets the version field.
    pub fn set_version(&mut self, value: u8) {
        self.buffer.as_mut()[field::VERSION] = value;
    }

    /// Sets the kind field.
    pub fn set_kind(&mut self, value: Kind) {
        self.buffer.as_mut()[field::KIND] = u8::from(value);
    }

    /// Sets the flags field.
    pub fn set_flags(&mut self, value: u16) {
        self.put(field::FLAGS, &value.to_be_bytes());
    }

    /// Sets the payload length field.
    pub fn set_length(&mut self, value: u32) {
        self.put(field::LENGTH, &value.to_be_bytes());
    }

    /// Sets the source node number (routers overwrite it: no spoofing).
    pub fn set_src_pnn(&mut self, value: u32) {
        self.put(field::SRC_PNN, &value.to_be_bytes());
    }

    /// Sets the source service (routers overwrite it: no spoofing).
    pub fn set_src_service(&mut self, value: u16) {
        self.put(field::SRC_SERVICE, &value.to_be_bytes());
    }

    /// Sets the destination service.
    pub fn set_dst_service(&mut self, value: u16) {
        self.put(field::DST_SERVICE, &value.to_be_bytes());
    }

    /// Sets the destination node number.
    pub fn set_dst_pnn(&mut self, value: u32) {
        self.put(field::DST_PNN, &value.to_be_bytes());
    }

    /// Sets the source address.
    pub fn set_src(&mut self, addr: Address) {
        self.set_src_pnn(addr.pnn);
        self.set_src_service(addr.service);
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, addr: Address) {
        self.set_dst_pnn(addr.pnn);
        self.set_dst_service(addr.service);
    }

    /// Sets the request id.
    pub fn set_request_id(&mut self, value: u64) {
        self.put(field::REQUEST_ID, &value.to_be_bytes());
    }

    /// Sets the opcode.
    pub fn set_opcode(&mut self, value: u32) {
        self.put(field::OPCODE, &value.to_be_bytes());
    }

    /// Sets the reserved field.
    pub fn set_reserved(&mut self, value: u32) {
        self.put(field::RESERVED, &value.to_be_bytes());
    }
}

/// A typed, validated header, without the payload length (which belongs to
/// the payload it travels with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderRepr {
    /// Request, Reply, Event or Error (never `Unknown` after [`HeaderRepr::parse`]).
    pub kind: Kind,
    /// Who sent the frame (rewritten by the router for local clients).
    pub src: Address,
    /// Where the frame goes.
    pub dst: Address,
    /// Chosen by the requester; echoed in the Reply/Error.
    pub request_id: u64,
    /// What the frame asks or tells.
    pub opcode: u32,
}

impl HeaderRepr {
    /// Parses and validates a header view.
    ///
    /// # Errors
    /// As [`Header::check`].
    pub fn parse<T: AsRef<[u8]>>(header: &Header<T>) -> Result<Self, DecodeError> {
        header.check()?;
        Ok(HeaderRepr {
            kind: header.kind(),
            src: header.src(),
            dst: header.dst(),
            request_id: header.request_id(),
            opcode: header.opcode(),
        })
    }

    /// The length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes this header, with `payload_len`, into the first [`HEADER_LEN`]
    /// bytes of `buf`.
    ///
    /// # Errors
    /// [`EncodeError::BufferTooSmall`] if `buf` is shorter than the header;
    /// [`EncodeError::PayloadTooLarge`] if `payload_len` exceeds [`MAX_PAYLOAD`].
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<(), EncodeError> {
        let length = u32::try_from(payload_len)
            .ok()
            .filter(|_| payload_len <= MAX_PAYLOAD)
            .ok_or(EncodeError::PayloadTooLarge {
                length: payload_len,
                max: MAX_PAYLOAD,
            })?;
        let have = buf.len();
        let mut h = Header::new_checked(buf).map_err(|_| EncodeError::BufferTooSmall {
            have,
            need: HEADER_LEN,
        })?;
        h.set_magic(MAGIC);
        h.set_version(VERSION);
        h.set_kind(self.kind);
        h.set_flags(0);
        h.set_length(length);
        h.set_src(self.src);
        h.set_dst(self.dst);
        h.set_request_id(self.request_id);
        h.set_opcode(self.opcode);
        h.set_reserved(0);
        Ok(())
    }

    /// The header of the Reply (or Error, with `kind`) to this request: source
    /// and destination swapped, same request id and opcode.
    pub fn answer(&self, kind: Kind) -> HeaderRepr {
        HeaderRepr {
            kind,
            src: self.dst,
            dst: self.src,
            request_id: self.request_id,
            opcode: self.opcode,
        }
    }
}
