//! The record checksum (CRC-32C): of records read back, of records encoded in place,
//! and of payloads as they are copied into a segment, a block at a time.
//!
//! Why not just the `crc32c` crate: below 768 bytes its SSE 4.2 path is one serial
//! chain of `crc32` (~6 GB/s), and that was a third of a warm replay's user time on
//! ~580-byte records (W4); here three chains run from 192 bytes on (580 B: 68 → 42 ns).
//! And a 4 KiB copy into the mapping and a checksum of the copy each run at about
//! 20–25 GB/s here, so one after the other they cost the sum of both: a `Log::append`
//! of 4 KiB records ran at about half a plain memcpy (W5). Here each block is
//! checksummed from the caller's bytes and then copied while still in the cache, and
//! its stores drain while the next block is checksummed: 4 KiB appends went from
//! 9.7–12.0 to 14.4–15.0 GB/s in the same runs (0.45–0.55 to 0.64–0.72 of memcpy).
//!
//! The checksum is `crc32c`'s, computed the way that crate computes it with SSE 4.2:
//! three chains of `crc32` over a block's thirds, combined by moving a register over
//! the bytes that follow it (a table per block size, built at compile time). The tests
//! compare the two on every length up to 1100 bytes and across the block sizes, from
//! four alignments; every record read back goes through it, and the record parser's
//! fuzz target with it. Without SSE 4.2 it is the `crc32c` crate.

/// CRC-32C's polynomial, reflected.
const POLYNOMIAL: u32 = 0x82F6_3B78;

/// Bytes of one of a block's three streams; blocks are three times this.
const STREAM_BYTES: usize = 256;
/// Bytes of one of a short block's three streams (the tail of a payload).
const SHORT_STREAM_BYTES: usize = 64;

/// Moves a CRC register over `bytes` zero bytes, a bit at a time (compile time only).
const fn shift_slowly(mut register: u32, bytes: usize) -> u32 {
    let mut bit = 0;
    while bit < bytes * 8 {
        register = (register >> 1) ^ (POLYNOMIAL & 0u32.wrapping_sub(register & 1));
        bit += 1;
    }
    register
}

/// A register moved over `bytes` zero bytes, by byte of the register: the shift is
/// linear, so it is the XOR of the four bytes' entries.
type ShiftTable = [[u32; 256]; 4];

const fn shift_table(bytes: usize) -> ShiftTable {
    let mut basis = [0u32; 32];
    let mut bit = 0;
    while bit < 32 {
        basis[bit] = shift_slowly(1 << bit, bytes);
        bit += 1;
    }
    let mut table = [[0u32; 256]; 4];
    let mut byte = 0;
    while byte < 4 {
        let mut value = 0;
        while value < 256 {
            let mut entry = 0;
            let mut bit = 0;
            while bit < 8 {
                if value & (1 << bit) != 0 {
                    entry ^= basis[8 * byte + bit];
                }
                bit += 1;
            }
            table[byte][value] = entry;
            value += 1;
        }
        byte += 1;
    }
    table
}

static SHIFT: ShiftTable = shift_table(STREAM_BYTES);
static SHORT_SHIFT: ShiftTable = shift_table(SHORT_STREAM_BYTES);

fn shift(table: &ShiftTable, register: u64) -> u64 {
    let entry = |byte: usize| table[byte][((register >> (8 * byte)) & 0xff) as usize];
    u64::from(entry(0) ^ entry(1) ^ entry(2) ^ entry(3))
}

/// The CRC-32C of `bytes` continued from `crc`, as `crc32c::crc32c_append(crc, bytes)`
/// computes it.
pub(crate) fn append(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        return crate::mapping::checksum_sse42(crc, bytes, None);
    }
    crc32c::crc32c_append(crc, bytes)
}

/// Copies `source` into `destination` (of the same length) and returns the CRC-32C of
/// `source` continued from `crc`, as [`append`] would.
pub(crate) fn copy_and_append(crc: u32, destination: &mut [u8], source: &[u8]) -> u32 {
    assert_eq!(destination.len(), source.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        return crate::mapping::checksum_sse42(crc, source, Some(destination));
    }
    destination.copy_from_slice(source);
    crc32c::crc32c_append(crc, source)
}

/// [`append`], and with a `destination` (of the source's length) [`copy_and_append`],
/// on a CPU with SSE 4.2 (the caller checked). Each block is copied once checksummed,
/// while it is still in the cache, and its stores drain while the next block is
/// checksummed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
pub(crate) fn append_with_sse42(crc: u32, mut source: &[u8], mut destination: Option<&mut [u8]>) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut register = u64::from(!crc);
    let copied = |block: &[u8], destination: &mut Option<&mut [u8]>| {
        if let Some(whole) = destination.take() {
            let (block_destination, rest) = whole.split_at_mut(block.len());
            block_destination.copy_from_slice(block);
            *destination = Some(rest);
        }
    };
    macro_rules! blocks {
        ($table:expr, $stream_bytes:expr) => {
            while source.len() >= 3 * $stream_bytes {
                let (block, rest) = source.split_at(3 * $stream_bytes);
                let streams: &[[[u8; 8]; $stream_bytes / 8]; 3] =
                    block.as_chunks::<8>().0.as_chunks::<{ $stream_bytes / 8 }>().0.try_into().expect("three streams");
                register = three_streams($table, register, streams);
                copied(block, &mut destination);
                source = rest;
            }
        };
    }
    blocks!(&SHIFT, STREAM_BYTES);
    blocks!(&SHORT_SHIFT, SHORT_STREAM_BYTES);
    let (words, tail) = source.as_chunks::<8>();
    for word in words {
        register = _mm_crc32_u64(register, u64::from_le_bytes(*word));
    }
    for byte in tail {
        register = u64::from(_mm_crc32_u8(register as u32, *byte));
    }
    copied(source, &mut destination);
    !(register as u32)
}

/// One block: three `crc32` chains over its thirds, interleaved (each instruction
/// waits three cycles for its own chain's last), then combined.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "sse4.2")]
fn three_streams<const WORDS: usize>(table: &ShiftTable, register: u64, streams: &[[[u8; 8]; WORDS]; 3]) -> u64 {
    use std::arch::x86_64::_mm_crc32_u64;
    let [first, second, third] = streams;
    let (mut register_first, mut register_second, mut register_third) = (register, 0u64, 0u64);
    for index in 0..WORDS {
        register_first = _mm_crc32_u64(register_first, u64::from_le_bytes(first[index]));
        register_second = _mm_crc32_u64(register_second, u64::from_le_bytes(second[index]));
        register_third = _mm_crc32_u64(register_third, u64::from_le_bytes(third[index]));
    }
    let register = shift(table, register_first) ^ register_second;
    shift(table, register) ^ register_third
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(length: usize) -> Vec<u8> {
        (0..length).map(|index| (index.wrapping_mul(131) ^ (index >> 7)) as u8).collect()
    }

    #[test]
    fn checksums_and_copies_as_crc32c_does_at_every_length_and_offset() {
        let source = pattern(5000);
        for length in (0..=1100).chain([2303, 2304, 2305, 3071, 3072, 3073, 4095, 4096, 4097, 4999]) {
            for start in [0, 1, 3, 8] {
                let source = &source[start..start + length.min(5000 - start)];
                let mut destination = vec![0u8; source.len()];
                let expected = crc32c::crc32c_append(0x1234_5678, source);
                assert_eq!(append(0x1234_5678, source), expected, "length {} from {start}", source.len());
                assert_eq!(copy_and_append(0x1234_5678, &mut destination, source), expected, "length {} from {start}", source.len());
                assert_eq!(destination, source, "length {} from {start}", source.len());
            }
        }
    }

    #[test]
    fn checksums_random_bytes_of_random_lengths_as_crc32c_does() {
        // xorshift64: reproducible bytes without a dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let length = (next() % 20_000) as usize;
            let source: Vec<u8> = (0..length).map(|_| next() as u8).collect();
            let crc = next() as u32;
            let expected = crc32c::crc32c_append(crc, &source);
            assert_eq!(append(crc, &source), expected, "length {length}");
            let mut destination = vec![0u8; length];
            assert_eq!(copy_and_append(crc, &mut destination, &source), expected, "length {length}");
            assert_eq!(destination, source);
        }
    }

    #[test]
    fn the_shift_tables_move_a_register_over_zeros() {
        // Appending n zeros to a checksum is what the shift does to the raw register.
        for register in [1u32, 0x8000_0000, 0xdead_beef] {
            let shifted = shift(&SHIFT, u64::from(register)) as u32;
            assert_eq!(shifted, shift_slowly(register, STREAM_BYTES));
            let zeros = vec![0u8; STREAM_BYTES];
            assert_eq!(!crc32c::crc32c_append(!register, &zeros), shifted);
        }
    }
}
