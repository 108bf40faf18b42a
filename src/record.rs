//! The record: the unit of the log, its header and its codec.
//!
//! ```text
//! offset  size  field
//!      0     4  length_bytes   data: payload bytes; padding/skip: bytes the record spans
//!      4     1  kind           0 = never written, 1 = padding, 2 = skip, 16..=255 = data
//!      5     1  flags          RecordFlags; only CUT on padding is defined
//!      6     2  reserved       must be 0
//!      8     4  crc            CRC-32C over bytes 0..8, 12..32 and the payload
//!     12     4  generation     the segment's random generation
//!     16     8  position       the record's own log position
//!     24     8  durable_hint   a position the log had made durable before this record
//!     32     …  payload        data records only, then zeros up to an 8-byte boundary
//! ```
//!
//! Bytes 0..8 (the *publication word*) are written last, with one release store, by
//! the appender: a word of zero means "not written (yet)". Every record starts on an
//! 8-byte boundary, so the word never straddles a sector and is never torn.
//!
//! The header is self-identifying: `generation` is drawn at random when a segment
//! file is created and `position` is where the record sits in the log, and both are
//! under the checksum. Bytes left in a file from an earlier use, or copied from
//! another place, therefore never validate.
//!
//! `durable_hint` makes recovery protocol-aware: a valid record whose hint lies
//! beyond a damaged record proves the damaged bytes had been made durable, so the
//! damage is corruption, not a torn tail (see `recovery.rs`).

use crate::checksum;
use bitflags::bitflags;
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of a record header.
pub const RECORD_HEADER_SIZE: usize = 32;
/// Records start on multiples of this.
pub const RECORD_ALIGNMENT: usize = 8;

const _: () = assert!(RECORD_HEADER_SIZE.is_multiple_of(RECORD_ALIGNMENT));
const _: () = assert!(std::mem::size_of::<RecordHeader>() == RECORD_HEADER_SIZE);

/// The fixed little-endian header of every record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    pub length_bytes: U32,
    pub kind: u8,
    pub flags: u8,
    pub reserved: U16,
    pub crc: U32,
    pub generation: U32,
    pub position: U64,
    pub durable_hint: U64,
}

/// What a record is. Kinds below [`RecordKind::FIRST_DATA`] belong to the log itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKind(pub u8);

impl RecordKind {
    /// Fills the rest of a segment: the segment is sealed, the log continues in the next.
    pub const PADDING: RecordKind = RecordKind(1);
    /// Covers a reservation whose writer gave up (error or panic) before publishing.
    pub const SKIP: RecordKind = RecordKind(2);
    /// The first kind available to users of the log.
    pub const FIRST_DATA: RecordKind = RecordKind(16);

    pub fn is_data(self) -> bool {
        self >= Self::FIRST_DATA
    }
}

bitflags! {
    /// Flags of a record header. Unknown bits make a record invalid.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct RecordFlags: u8 {
        /// On a padding record: the segment was sealed by an explicit cut, not because it was full.
        const CUT = 0b0000_0001;
    }
}

/// Rounds `bytes` up to the record alignment.
pub const fn align_up(bytes: u64) -> u64 {
    (bytes + (RECORD_ALIGNMENT as u64 - 1)) & !(RECORD_ALIGNMENT as u64 - 1)
}

/// Bytes a data record with `payload_bytes` of payload occupies in a segment.
pub const fn data_span_bytes(payload_bytes: u64) -> u64 {
    align_up(RECORD_HEADER_SIZE as u64 + payload_bytes)
}

/// What the checksum of a record covers: everything but the crc field itself.
pub fn record_crc(header: &RecordHeader, payload: &[u8]) -> u32 {
    checksum::append(header_crc(header), payload)
}

/// The checksum of the header's part of a record: the payload's bytes continue it.
pub(crate) fn header_crc(header: &RecordHeader) -> u32 {
    let bytes = header.as_bytes();
    checksum::append(checksum::append(0, &bytes[0..8]), &bytes[12..RECORD_HEADER_SIZE])
}

impl RecordHeader {
    /// A header for a record at `position`; `crc` is left for [`RecordHeader::seal_crc`].
    pub fn new(kind: RecordKind, flags: RecordFlags, length_bytes: u32, generation: u32, position: u64, durable_hint: u64) -> Self {
        RecordHeader {
            length_bytes: U32::new(length_bytes),
            kind: kind.0,
            flags: flags.bits(),
            reserved: U16::new(0),
            crc: U32::new(0),
            generation: U32::new(generation),
            position: U64::new(position),
            durable_hint: U64::new(durable_hint),
        }
    }

    /// Computes and stores the checksum over this header and `payload`.
    pub fn seal_crc(&mut self, payload: &[u8]) {
        self.crc = U32::new(0);
        self.crc = U32::new(record_crc(self, payload));
    }

    /// The publication word: bytes 0..8 in native order, so that storing it as a `u64`
    /// lays down exactly these bytes.
    pub fn publication_word(&self) -> u64 {
        let bytes: [u8; 8] = self.as_bytes()[0..8].try_into().expect("header has 8 leading bytes");
        u64::from_ne_bytes(bytes)
    }

    pub fn kind(&self) -> RecordKind {
        RecordKind(self.kind)
    }

    /// Bytes this record occupies in its segment, from its header's own fields; `None`
    /// when the kind is not one the log knows.
    pub fn span_bytes(&self) -> Option<u64> {
        let length_bytes = u64::from(self.length_bytes.get());
        match self.kind() {
            RecordKind::PADDING | RecordKind::SKIP => Some(length_bytes),
            kind if kind.is_data() => Some(data_span_bytes(length_bytes)),
            _ => None,
        }
    }
}

/// Bytes a published record spans, read from its publication word alone. Used by the
/// appender's frontier scan over words it published itself.
pub fn span_from_publication_word(word: u64) -> Option<u64> {
    let bytes = word.to_ne_bytes();
    let length_bytes = u64::from(u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")));
    match RecordKind(bytes[4]) {
        RecordKind::PADDING | RecordKind::SKIP => Some(length_bytes),
        kind if kind.is_data() => Some(data_span_bytes(length_bytes)),
        _ => None,
    }
}

/// What the decoder expects of a record at a place in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The segment's generation.
    pub generation: u32,
    /// The log position of the first byte given to the decoder.
    pub position: u64,
}

/// A record that decoded and validated, borrowing its payload from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    pub kind: RecordKind,
    pub flags: RecordFlags,
    pub position: u64,
    pub durable_hint: u64,
    /// Bytes the record occupies, header, payload and alignment padding included.
    pub span_bytes: u64,
    /// The payload of a data record; empty for padding and skip records.
    pub payload: &'a [u8],
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than a header, or than the length the header claims.
    Truncated,
    UnknownKind(u8),
    UnknownFlags(u8),
    ReservedNotZero,
    WrongGeneration,
    WrongPosition,
    HintBeyondPosition,
    /// A padding or skip record spanning less than a header or not a multiple of 8.
    BadSpan,
    /// Bytes between the payload and the next 8-byte boundary that are not zero.
    AlignmentNotZero,
    ChecksumMismatch,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated => write!(f, "record extends past the available bytes"),
            Invalid::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            Invalid::UnknownFlags(flags) => write!(f, "unknown record flags {flags:#04x}"),
            Invalid::ReservedNotZero => write!(f, "reserved header bytes are not zero"),
            Invalid::WrongGeneration => write!(f, "record belongs to another segment generation"),
            Invalid::WrongPosition => write!(f, "record claims another position"),
            Invalid::HintBeyondPosition => write!(f, "durable hint lies beyond the record"),
            Invalid::BadSpan => write!(f, "padding span is not a whole number of 8-byte units"),
            Invalid::AlignmentNotZero => write!(f, "alignment bytes after the payload are not zero"),
            Invalid::ChecksumMismatch => write!(f, "checksum mismatch"),
        }
    }
}

/// The decoder's verdict on the bytes at one record position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// The publication word is zero: nothing was ever written here.
    Unwritten,
    Record(DecodedRecord<'a>),
    Invalid(Invalid),
}

/// The header fields of `bytes` if they can possibly start a record at `expected`:
/// the cheap checks recovery uses to look for records beyond damage.
pub fn header_if_plausible(bytes: &[u8], expected: Expected) -> Option<RecordHeader> {
    let (header, _) = RecordHeader::read_from_prefix(bytes).ok()?;
    (header.position.get() == expected.position && header.generation.get() == expected.generation).then_some(header)
}

/// Decodes the record at the start of `bytes`. Never panics and never reads outside
/// `bytes`; accepts only bytes that are exactly an encoded record (header, payload,
/// zero alignment) whose position and generation are `expected`.
pub fn decode(bytes: &[u8], expected: Expected) -> Decoded<'_> {
    let Ok((header, rest)) = RecordHeader::read_from_prefix(bytes) else {
        if bytes.len() >= 8 && bytes[0..8].iter().all(|&byte| byte == 0) {
            return Decoded::Unwritten;
        }
        return Decoded::Invalid(Invalid::Truncated);
    };
    if header.publication_word() == 0 {
        return Decoded::Unwritten;
    }
    match validate(&header, rest, expected) {
        Ok(record) => Decoded::Record(record),
        Err(invalid) => Decoded::Invalid(invalid),
    }
}

fn validate<'a>(header: &RecordHeader, rest: &'a [u8], expected: Expected) -> Result<DecodedRecord<'a>, Invalid> {
    let kind = header.kind();
    let Some(flags) = RecordFlags::from_bits(header.flags) else {
        return Err(Invalid::UnknownFlags(header.flags));
    };
    let span_bytes = header.span_bytes().ok_or(Invalid::UnknownKind(header.kind))?;
    if kind.is_data() && !flags.is_empty() || kind == RecordKind::SKIP && !flags.is_empty() {
        return Err(Invalid::UnknownFlags(header.flags));
    }
    if header.reserved.get() != 0 {
        return Err(Invalid::ReservedNotZero);
    }
    if header.generation.get() != expected.generation {
        return Err(Invalid::WrongGeneration);
    }
    if header.position.get() != expected.position {
        return Err(Invalid::WrongPosition);
    }
    if header.durable_hint.get() > header.position.get() {
        return Err(Invalid::HintBeyondPosition);
    }
    let payload: &[u8] = if kind.is_data() {
        // Bounded before use: the length comes from the bytes and is checked against them.
        let payload_bytes = header.length_bytes.get() as usize;
        let padded_bytes = span_bytes as usize - RECORD_HEADER_SIZE;
        if rest.len() < padded_bytes {
            return Err(Invalid::Truncated);
        }
        if rest[payload_bytes..padded_bytes].iter().any(|&byte| byte != 0) {
            return Err(Invalid::AlignmentNotZero);
        }
        &rest[..payload_bytes]
    } else {
        if span_bytes < RECORD_HEADER_SIZE as u64 || span_bytes % RECORD_ALIGNMENT as u64 != 0 {
            return Err(Invalid::BadSpan);
        }
        &[]
    };
    if record_crc(header, payload) != header.crc.get() {
        return Err(Invalid::ChecksumMismatch);
    }
    Ok(DecodedRecord { kind, flags, position: header.position.get(), durable_hint: header.durable_hint.get(), span_bytes, payload })
}

/// Encodes a data record into a new vector: the reference encoding the tests and the
/// fuzzer compare against. The appender encodes in place instead (see `mapping.rs`).
pub fn encode_to_vec(kind: RecordKind, payload: &[u8], expected: Expected, durable_hint: u64) -> Vec<u8> {
    assert!(kind.is_data(), "only data records carry a payload");
    let length_bytes = u32::try_from(payload.len()).expect("payload length fits in u32");
    let mut header = RecordHeader::new(kind, RecordFlags::empty(), length_bytes, expected.generation, expected.position, durable_hint);
    header.seal_crc(payload);
    let mut bytes = Vec::with_capacity(data_span_bytes(payload.len() as u64) as usize);
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(payload);
    bytes.resize(data_span_bytes(payload.len() as u64) as usize, 0);
    bytes
}

/// Encodes the header-only record (padding or skip) spanning `span_bytes`.
pub fn marker_header(
    kind: RecordKind,
    flags: RecordFlags,
    span_bytes: u64,
    generation: u32,
    position: u64,
    durable_hint: u64,
) -> RecordHeader {
    debug_assert!(kind == RecordKind::PADDING || kind == RecordKind::SKIP);
    debug_assert!(span_bytes >= RECORD_HEADER_SIZE as u64 && span_bytes.is_multiple_of(RECORD_ALIGNMENT as u64));
    let length_bytes = u32::try_from(span_bytes).expect("a span fits in a segment, whose size fits in u32");
    let mut header = RecordHeader::new(kind, flags, length_bytes, generation, position, durable_hint);
    header.seal_crc(&[]);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: Expected = Expected { generation: 0xdead_beef, position: 4096 };
    const KIND: RecordKind = RecordKind(17);

    fn payload_of(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn data_records_round_trip() {
        for size in [0, 1, 7, 8, 9, 63, 64, 255, 1024, 70_000] {
            let payload = payload_of(size);
            let bytes = encode_to_vec(KIND, &payload, EXPECTED, 100);
            assert_eq!(bytes.len() as u64, data_span_bytes(size as u64));
            let Decoded::Record(record) = decode(&bytes, EXPECTED) else { panic!("size {size} did not decode") };
            assert_eq!(record.payload, &payload[..]);
            assert_eq!(record.kind, KIND);
            assert_eq!(record.durable_hint, 100);
            assert_eq!(record.span_bytes, bytes.len() as u64);
        }
    }

    #[test]
    fn markers_round_trip() {
        for kind in [RecordKind::PADDING, RecordKind::SKIP] {
            let header = marker_header(kind, RecordFlags::empty(), 4096, EXPECTED.generation, EXPECTED.position, 0);
            let Decoded::Record(record) = decode(header.as_bytes(), EXPECTED) else { panic!("marker did not decode") };
            assert_eq!(record.span_bytes, 4096);
            assert_eq!(record.kind, kind);
        }
    }

    #[test]
    fn zeros_read_as_unwritten() {
        assert_eq!(decode(&[0u8; 64], EXPECTED), Decoded::Unwritten);
        assert_eq!(decode(&[0u8; 8], EXPECTED), Decoded::Unwritten);
        assert_eq!(decode(&[0u8; 3], EXPECTED), Decoded::Invalid(Invalid::Truncated));
    }

    #[test]
    fn every_single_and_double_bit_flip_is_rejected() {
        for size in [0, 5, 8, 33, 200] {
            let bytes = encode_to_vec(KIND, &payload_of(size), EXPECTED, 64);
            let bits = bytes.len() * 8;
            for first in 0..bits {
                let mut flipped = bytes.clone();
                flipped[first / 8] ^= 1 << (first % 8);
                assert!(!matches!(decode(&flipped, EXPECTED), Decoded::Record(_)), "size {size}: flip of bit {first} accepted");
                for second in first + 1..bits {
                    let mut twice = flipped.clone();
                    twice[second / 8] ^= 1 << (second % 8);
                    assert!(
                        !matches!(decode(&twice, EXPECTED), Decoded::Record(_)),
                        "size {size}: flips of bits {first} and {second} accepted"
                    );
                }
            }
        }
    }

    #[test]
    fn stale_or_moved_records_are_rejected() {
        let bytes = encode_to_vec(KIND, b"hello", EXPECTED, 0);
        let other_generation = Expected { generation: EXPECTED.generation ^ 1, ..EXPECTED };
        assert_eq!(decode(&bytes, other_generation), Decoded::Invalid(Invalid::WrongGeneration));
        let other_position = Expected { position: EXPECTED.position + 8, ..EXPECTED };
        assert_eq!(decode(&bytes, other_position), Decoded::Invalid(Invalid::WrongPosition));
    }

    #[test]
    fn truncated_records_are_rejected() {
        let bytes = encode_to_vec(KIND, &payload_of(100), EXPECTED, 0);
        for cut in 0..bytes.len() {
            assert!(!matches!(decode(&bytes[..cut], EXPECTED), Decoded::Record(_)), "prefix of {cut} bytes accepted");
        }
    }

    #[test]
    fn random_mutations_are_never_accepted() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5e65_7021);
        for _ in 0..20_000 {
            let size = rng.gen_range(0..300);
            let bytes = encode_to_vec(KIND, &payload_of(size), EXPECTED, 0);
            let mut mutated = bytes.clone();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..mutated.len());
                mutated[at] = rng.gen();
            }
            if mutated == bytes {
                continue;
            }
            assert!(!matches!(decode(&mutated, EXPECTED), Decoded::Record(_)), "mutation accepted: {mutated:?}");
        }
    }

    #[test]
    fn accepted_bytes_re_encode_identically() {
        let bytes = encode_to_vec(KIND, &payload_of(77), EXPECTED, 8);
        let Decoded::Record(record) = decode(&bytes, EXPECTED) else { panic!() };
        assert_eq!(encode_to_vec(record.kind, record.payload, EXPECTED, record.durable_hint), bytes);
    }
}
