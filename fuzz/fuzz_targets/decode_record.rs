//! The record decoder on arbitrary bytes: it must never panic, and must accept only
//! bytes that are exactly what the encoder produces.
//!
//! Input: 4 bytes generation (LE), 8 bytes position (LE), then the bytes to decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use segstore::record::{decode, encode_to_vec, marker_header, Decoded, Expected, RecordFlags, RecordKind, RECORD_HEADER_SIZE};
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let Some((head, bytes)) = data.split_first_chunk::<12>() else { return };
    let expected = Expected {
        generation: u32::from_le_bytes(head[0..4].try_into().unwrap()),
        position: u64::from_le_bytes(head[4..12].try_into().unwrap()),
    };
    match decode(bytes, expected) {
        Decoded::Record(record) => {
            assert_eq!(record.position, expected.position);
            assert!(record.durable_hint <= record.position);
            assert_eq!(record.span_bytes % 8, 0, "records keep the 8-byte alignment");
            assert!(record.span_bytes >= RECORD_HEADER_SIZE as u64);
            if record.kind.is_data() {
                assert!(record.flags.is_empty());
                let span = usize::try_from(record.span_bytes).unwrap();
                assert!(span <= bytes.len(), "accepted a record longer than its input");
                let encoded = encode_to_vec(record.kind, record.payload, expected, record.durable_hint);
                assert_eq!(&encoded[..], &bytes[..span], "accepted bytes that are not the exact encoding");
            } else {
                assert!(record.kind == RecordKind::PADDING || record.kind == RecordKind::SKIP, "kind {:?}", record.kind);
                assert!(record.payload.is_empty());
                assert!(record.kind == RecordKind::PADDING || record.flags == RecordFlags::empty());
                // The decoder only sees the header of a marker; its span is checked by the reader.
                let header = marker_header(
                    record.kind,
                    record.flags,
                    record.span_bytes,
                    expected.generation,
                    expected.position,
                    record.durable_hint,
                );
                assert_eq!(header.as_bytes(), &bytes[..RECORD_HEADER_SIZE], "accepted a marker that is not the exact encoding");
            }
        }
        Decoded::Unwritten => {
            assert!(bytes.len() >= 8 && bytes[..8].iter().all(|&byte| byte == 0), "unwritten needs a zero publication word");
        }
        Decoded::Invalid(_) => {}
    }
});
