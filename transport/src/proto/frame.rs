//! Whole frames: the incremental [`check`], the borrowed [`FrameRef`], the
//! owned [`Message`], and the postcard payload helpers.

use serde::{Deserialize, Serialize};

use super::error::{DecodeError, EncodeError, PayloadError};
use super::header::{Header, HeaderRepr};
use super::{HEADER_LEN, MAX_PAYLOAD};

/// What [`check`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The buffer holds a prefix of a (so far valid) frame; `need` is the
    /// total number of bytes needed to go on (header, then header + payload).
    Incomplete {
        /// Total bytes needed from the start of the buffer.
        need: usize,
    },
    /// A whole valid frame of `frame_len` bytes starts the buffer.
    Complete {
        /// Header plus payload length.
        frame_len: usize,
    },
}

/// Looks at the start of `buf` without allocating: is a whole frame there?
///
/// The header is validated as soon as its 40 bytes are present, so a bad
/// magic or an oversized length is reported before any payload is read.
///
/// # Errors
/// Any header error of [`Header::check`].
pub fn check(buf: &[u8]) -> Result<Check, DecodeError> {
    let header = match Header::new_checked(buf) {
        Ok(h) => h,
        Err(_) => return Ok(Check::Incomplete { need: HEADER_LEN }),
    };
    let frame_len = HEADER_LEN + header.payload_len()?;
    if buf.len() < frame_len {
        Ok(Check::Incomplete { need: frame_len })
    } else {
        Ok(Check::Complete { frame_len })
    }
}

/// A frame borrowed from a buffer: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The validated header.
    pub header: HeaderRepr,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl<'a> FrameRef<'a> {
    /// Decodes the frame at the start of `buf`; returns it and its length, so
    /// a caller can go on with `&buf[len..]`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] if the buffer ends inside the frame, or any
    /// header error.
    pub fn decode_prefix(buf: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        match check(buf)? {
            Check::Incomplete { need } => Err(DecodeError::Truncated {
                have: buf.len(),
                need,
            }),
            Check::Complete { frame_len } => {
                let header = HeaderRepr::parse(&Header::new_checked(buf)?)?;
                let payload = buf
                    .get(HEADER_LEN..frame_len)
                    .ok_or(DecodeError::Truncated {
                        have: buf.len(),
                        need: frame_len,
                    })?;
                Ok((FrameRef { header, payload }, frame_len))
            }
        }
    }

    /// Decodes `buf` as exactly one frame.
    ///
    /// # Errors
    /// As [`FrameRef::decode_prefix`], plus [`DecodeError::TrailingBytes`].
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (frame, len) = Self::decode_prefix(buf)?;
        if len != buf.len() {
            return Err(DecodeError::TrailingBytes {
                extra: buf.len() - len,
            });
        }
        Ok(frame)
    }

    /// Copies the payload into an owned [`Message`].
    pub fn to_message(&self) -> Message {
        Message {
            header: self.header,
            payload: self.payload.to_vec(),
        }
    }

    /// Decodes the payload as `T` (postcard).
    ///
    /// # Errors
    /// As [`decode_payload`].
    pub fn decode_payload<T: Deserialize<'a>>(&self) -> Result<T, PayloadError> {
        decode_payload(self.payload)
    }
}

/// An owned frame: what the client library hands to a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header (addresses already rewritten by the router).
    pub header: HeaderRepr,
    /// The postcard-encoded payload, at most [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with an already encoded payload.
    pub fn new(header: HeaderRepr, payload: Vec<u8>) -> Self {
        Message { header, payload }
    }

    /// A message whose payload is `value` encoded with postcard.
    ///
    /// # Errors
    /// As [`encode_payload`].
    pub fn with_payload<T: Serialize + ?Sized>(
        header: HeaderRepr,
        value: &T,
    ) -> Result<Self, PayloadError> {
        Ok(Message {
            header,
            payload: encode_payload(value)?,
        })
    }

    /// Decodes `buf` as exactly one frame, copying the payload.
    ///
    /// # Errors
    /// As [`FrameRef::decode`].
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        FrameRef::decode(buf).map(|f| f.to_message())
    }

    /// Decodes the payload as `T` (postcard).
    ///
    /// # Errors
    /// As [`decode_payload`].
    pub fn decode_payload<'a, T: Deserialize<'a>>(&'a self) -> Result<T, PayloadError> {
        decode_payload(&self.payload)
    }

    /// Appends the encoded frame to `out`.
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`].
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_frame(&self.header, &self.payload, out)
    }

    /// The encoded frame as a new vector.
    ///
    /// # Errors
    /// [`EncodeError::PayloadTooLarge`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// Appends the frame `header` + `payload` to `out` (no allocation beyond
/// growing `out`).
///
/// # Errors
/// [`EncodeError::PayloadTooLarge`] if `payload` exceeds [`MAX_PAYLOAD`];
/// `out` is left unchanged then.
pub fn encode_frame(
    header: &HeaderRepr,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut head = [0u8; HEADER_LEN];
    header.emit(&mut head, payload.len())?;
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    Ok(())
}

/// Encodes a payload value with postcard.
///
/// # Errors
/// [`PayloadError::Encode`] if serde fails (e.g. an unsupported type),
/// [`PayloadError::TooLarge`] over [`MAX_PAYLOAD`].
pub fn encode_payload<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PayloadError> {
    let type_name = core::any::type_name::<T>();
    let bytes =
        postcard::to_stdvec(value).map_err(|source| PayloadError::Encode { type_name, source })?;
    if bytes.len() > MAX_PAYLOAD {
        return Err(PayloadError::TooLarge {
            type_name,
            length: bytes.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(bytes)
}

/// Decodes a payload value with postcard; the whole input must be used.
///
/// Allocation is bounded by the input: every length prefix is checked against
/// the remaining bytes by postcard.
///
/// # Errors
/// [`PayloadError::Decode`] for malformed or truncated input,
/// [`PayloadError::Trailing`] if bytes are left over.
pub fn decode_payload<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PayloadError> {
    let type_name = core::any::type_name::<T>();
    let (value, rest) = postcard::take_from_bytes(bytes)
        .map_err(|source| PayloadError::Decode { type_name, source })?;
    if !rest.is_empty() {
        return Err(PayloadError::Trailing {
            type_name,
            extra: rest.len(),
        });
    }
    Ok(value)
}
