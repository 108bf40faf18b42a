//! Writes a small seed corpus for both fuzz targets: exact encodings the fuzzer would
//! otherwise first have to discover through the checksums.
//!
//! Usage: cargo run --example seed_corpus [CORPUS_DIR]   (default: corpus)

use std::fs;
use std::path::Path;

use segstore::record::{encode_to_vec, marker_header, Expected, RecordFlags, RecordKind};
use segstore::segment::{SegmentInfo, SEGMENT_HEADER_SIZE};
use zerocopy::IntoBytes;

/// Must match the marker byte of the structured form in `recover_segment.rs`.
const STRUCTURED: u8 = 0xA5;

fn main() -> std::io::Result<()> {
    let root = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    let decode_dir = Path::new(&root).join("decode_record");
    let recover_dir = Path::new(&root).join("recover_segment");
    fs::create_dir_all(&decode_dir)?;
    fs::create_dir_all(&recover_dir)?;

    let expected = Expected { generation: 0x5eed_0001, position: 4096 + SEGMENT_HEADER_SIZE };
    let prefix = |bytes: &[u8]| {
        let mut input = expected.generation.to_le_bytes().to_vec();
        input.extend_from_slice(&expected.position.to_le_bytes());
        input.extend_from_slice(bytes);
        input
    };
    let mut decode_seeds = vec![prefix(&[0; 32])];
    for (index, size) in [0usize, 1, 7, 8, 9, 100].into_iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|byte| byte as u8).collect();
        let hint = [0, expected.position][index % 2];
        decode_seeds.push(prefix(&encode_to_vec(RecordKind(16 + index as u8), &payload, expected, hint)));
    }
    for (kind, flags) in
        [(RecordKind::PADDING, RecordFlags::empty()), (RecordKind::PADDING, RecordFlags::CUT), (RecordKind::SKIP, RecordFlags::empty())]
    {
        let header = marker_header(kind, flags, 64, expected.generation, expected.position, expected.position);
        decode_seeds.push(prefix(header.as_bytes()));
    }
    write_all(&decode_dir, &decode_seeds)?;

    // Raw images: one sealed, one with a skip and an unwritten tail.
    let info = SegmentInfo { sequence: 1, base_position: 4096, size_bytes: 4096, generation: expected.generation };
    let mut recover_seeds = Vec::new();
    for sealed in [true, false] {
        let mut image = vec![0u8; info.size_bytes as usize];
        image[..SEGMENT_HEADER_SIZE as usize].copy_from_slice(info.encode().as_bytes());
        let mut offset = SEGMENT_HEADER_SIZE;
        for size in [5u64, 40, 0] {
            let at = Expected { generation: info.generation, position: info.base_position + offset };
            let bytes = encode_to_vec(RecordKind(16), &vec![7; size as usize], at, at.position);
            image[offset as usize..][..bytes.len()].copy_from_slice(&bytes);
            offset += bytes.len() as u64;
        }
        let position = info.base_position + offset;
        let (kind, span) = if sealed { (RecordKind::PADDING, info.size_bytes - offset) } else { (RecordKind::SKIP, 64) };
        let header = marker_header(kind, RecordFlags::empty(), span, info.generation, position, position);
        image[offset as usize..][..header.as_bytes().len()].copy_from_slice(header.as_bytes());
        recover_seeds.push(image);
    }
    // Structured descriptions: the bytes after the marker only steer the builder.
    recover_seeds.push(vec![STRUCTURED]);
    recover_seeds.push([STRUCTURED].into_iter().chain((0..=255u8).cycle().take(512)).collect());
    write_all(&recover_dir, &recover_seeds)?;
    Ok(())
}

fn write_all(directory: &Path, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    for (index, seed) in seeds.iter().enumerate() {
        fs::write(directory.join(format!("seed-{index:02}")), seed)?;
    }
    Ok(())
}
