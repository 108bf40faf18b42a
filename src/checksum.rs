//! The record checksum (CRC-32C): of records read back, of records encoded in place,
//! and of payloads as they are copied into a segment.
//!
//! Why not just the `crc32c` crate: a 4 KiB copy into the mapping and the crate's
//! checksum of the copy each run at about 20–25 GB/s here, so one after the other
//! they cost the sum of both: a `Log::append` of 4 KiB records ran at about half a
//! plain memcpy (W5). And below 768 bytes the crate's SSE 4.2 path is one serial chain
//! of `crc32` (~6 GB/s), a third of a warm replay's user time on ~580-byte records (W4).
//!
//! Two kernels, picked per call by what the CPU has and the length:
//! - From 512 bytes, with AVX-512F and VPCLMULQDQ: folding with carry-less multiplies,
//!   256 bytes per step (4 KiB: ~91 ns against ~200 ns for the crate), storing each
//!   256 bytes to the destination from the registers they were loaded into. W5 4 KiB,
//!   alternating with the build before: 0.55–0.65 → 0.94 of memcpy.
//! - Otherwise with SSE 4.2: three `crc32` chains over a block's thirds, combined by
//!   moving a register over the bytes that follow it, from 192 bytes on (580 B: 68 →
//!   42 ns); each block is copied right after it is checksummed, while in cache (W5 4
//!   KiB: 0.45–0.55 → 0.64–0.72 of memcpy against a copy, then a checksum).
//!
//! Without either, the `crc32c` crate after a plain copy. The constants (shift tables,
//! folding multipliers) are computed at compile time. The tests compare every kernel
//! the CPU has with `crc32c` on every length around the block sizes, from four
//! alignments, and on random inputs; every record read back goes through them, and
//! the record parser's fuzz target with them.

/// CRC-32C's polynomial, reflected.
const POLYNOMIAL: u32 = 0x82F6_3B78;

/// Bytes of one of a block's three streams; blocks are three times this.
const STREAM_BYTES: usize = 256;
/// Bytes of one of a short block's three streams (the tail of a payload).
const SHORT_STREAM_BYTES: usize = 64;

/// Moves a CRC register over `bytes` zero bytes, a bit at a time (compile time only).
const fn shift_slowly(register: u32, bytes: usize) -> u32 {
    shift_bits(register, bytes * 8)
}

/// Moves a CRC register over `bits` zero bits: multiplies it by `x^bits` modulo the
/// polynomial, in the reflected order.
const fn shift_bits(mut register: u32, bits: usize) -> u32 {
    let mut bit = 0;
    while bit < bits {
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
    dispatch(crc, bytes, None)
}

/// Copies `source` into `destination` (of the same length) and returns the CRC-32C of
/// `source` continued from `crc`, as [`append`] would.
pub(crate) fn copy_and_append(crc: u32, destination: &mut [u8], source: &[u8]) -> u32 {
    assert_eq!(destination.len(), source.len());
    dispatch(crc, source, Some(destination))
}

/// The fastest kernel this CPU has for this length.
fn dispatch(crc: u32, source: &[u8], destination: Option<&mut [u8]>) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if source.len() >= WIDE_MIN_BYTES && has_wide_kernel() {
            return crate::mapping::checksum_avx512(crc, source, destination);
        }
        if std::arch::is_x86_feature_detected!("sse4.2") {
            return crate::mapping::checksum_sse42(crc, source, destination);
        }
    }
    if let Some(destination) = destination {
        destination.copy_from_slice(source);
    }
    crc32c::crc32c_append(crc, source)
}

/// Whether the CPU runs [`append_with_avx512`].
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_wide_kernel() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("vpclmulqdq")
        && std::arch::is_x86_feature_detected!("pclmulqdq")
        && std::arch::is_x86_feature_detected!("sse4.2")
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

/// Bytes from which the folding kernel runs: its first block is 256 bytes, and below
/// two blocks the three `crc32` chains are as fast.
const WIDE_MIN_BYTES: usize = 512;

/// The folding constant for moving 64 bits over `n` bits: `x^n mod P`, reflected and
/// shifted left once (a carry-less product of reflected operands comes out one bit low).
const fn fold_constant(n: usize) -> u64 {
    // `1 << 31` is the reflected `x^0`.
    (shift_bits(1 << 31, n) as u64) << 1
}

/// Moving a 128-bit lane 16 bytes on: its low half over 128 + 32 bits, its high half
/// over 128 − 32.
const FOLD_16_LOW: u64 = fold_constant(128 + 32);
const FOLD_16_HIGH: u64 = fold_constant(128 - 32);
/// Moving a lane 256 bytes on (four 64-byte registers ahead).
const FOLD_256_LOW: u64 = fold_constant(2048 + 32);
const FOLD_256_HIGH: u64 = fold_constant(2048 - 32);

/// [`append`], and with a `destination` [`copy_and_append`], by folding: four 64-byte
/// registers of the message are multiplied forward (carry-less, `vpclmulqdq`) onto the
/// next 256 bytes until the end, then their sixteen 128-bit lanes onto each other, and
/// the last 16 bytes of remainder are checksummed with `crc32`, which finishes the
/// reduction modulo the polynomial. The initial register is XORed into the first bytes,
/// which is what starting `crc32` from it does. With a destination, each 256 bytes are
/// stored from the registers they were loaded into: the copy costs no second read. For
/// at least [`WIDE_MIN_BYTES`]; on a CPU with AVX-512F, VPCLMULQDQ, PCLMULQDQ and SSE 4.2
/// (the caller checked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2,pclmulqdq,avx2,avx512f,vpclmulqdq")]
pub(crate) fn append_with_avx512(crc: u32, source: &[u8], destination: Option<&mut [u8]>) -> u32 {
    use std::arch::x86_64::{
        __m128i, __m512i, _mm512_clmulepi64_epi128, _mm512_set_epi64, _mm512_ternarylogic_epi64, _mm512_xor_si512, _mm_clmulepi64_si128,
        _mm_crc32_u64, _mm_crc32_u8, _mm_set_epi64x, _mm_xor_si128,
    };
    assert!(source.len() >= WIDE_MIN_BYTES);
    let (blocks, tail) = source.as_chunks::<256>();
    let mut destination = destination.map(|destination| destination.as_chunks_mut::<256>());
    let load = |block: &[u8; 256]| -> [__m512i; 4] { zerocopy::transmute!(*block) };
    let mut registers = load(&blocks[0]);
    registers[0] = _mm512_xor_si512(registers[0], _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, i64::from(!crc)));
    if let Some((destination_blocks, _)) = destination.as_mut() {
        destination_blocks[0] = blocks[0];
    }
    let constants = _mm512_set_epi64(
        FOLD_256_HIGH as i64,
        FOLD_256_LOW as i64,
        FOLD_256_HIGH as i64,
        FOLD_256_LOW as i64,
        FOLD_256_HIGH as i64,
        FOLD_256_LOW as i64,
        FOLD_256_HIGH as i64,
        FOLD_256_LOW as i64,
    );
    for (index, block) in blocks.iter().enumerate().skip(1) {
        let next = load(block);
        if let Some((destination_blocks, _)) = destination.as_mut() {
            destination_blocks[index] = zerocopy::transmute!(next);
        }
        for (register, next) in registers.iter_mut().zip(next) {
            let low = _mm512_clmulepi64_epi128(*register, constants, 0x00);
            let high = _mm512_clmulepi64_epi128(*register, constants, 0x11);
            // low ^ high ^ next
            *register = _mm512_ternarylogic_epi64(low, high, next, 0x96);
        }
    }
    let fold_16 = |lane: __m128i| {
        let constants = _mm_set_epi64x(FOLD_16_HIGH as i64, FOLD_16_LOW as i64);
        _mm_xor_si128(_mm_clmulepi64_si128(lane, constants, 0x00), _mm_clmulepi64_si128(lane, constants, 0x11))
    };
    let lanes: [__m128i; 16] = zerocopy::transmute!(registers);
    let mut remainder = lanes[0];
    for lane in &lanes[1..] {
        remainder = _mm_xor_si128(fold_16(remainder), *lane);
    }
    let (pieces, bytes) = tail.as_chunks::<16>();
    for piece in pieces {
        remainder = _mm_xor_si128(fold_16(remainder), zerocopy::transmute!(*piece));
    }
    if let Some((_, destination_tail)) = destination {
        destination_tail.copy_from_slice(tail);
    }
    let [low, high]: [u64; 2] = zerocopy::transmute!(remainder);
    let mut register = _mm_crc32_u64(_mm_crc32_u64(0, low), high);
    for byte in bytes {
        register = u64::from(_mm_crc32_u8(register as u32, *byte));
    }
    !(register as u32)
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

    /// Each kernel this CPU has, called directly (the dispatch picks one per length).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_kernel_this_cpu_has_checksums_and_copies_as_crc32c_does() {
        let source = pattern(9000);
        type Kernel = fn(u32, &[u8], Option<&mut [u8]>) -> u32;
        let kernels: [(&str, bool, usize, Kernel); 2] = [
            ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2"), 0, crate::mapping::checksum_sse42),
            ("avx512", has_wide_kernel(), WIDE_MIN_BYTES, crate::mapping::checksum_avx512),
        ];
        for (name, present, min_bytes, kernel) in kernels {
            if !present {
                eprintln!("this CPU lacks the {name} kernel");
                continue;
            }
            for length in (min_bytes..min_bytes + 600).chain([4096, 4097, 8191, 9000]) {
                let source = &source[..length];
                let expected = crc32c::crc32c_append(0xfeed_f00d, source);
                assert_eq!(kernel(0xfeed_f00d, source, None), expected, "{name}, length {length}");
                let mut destination = vec![0u8; length];
                assert_eq!(kernel(0xfeed_f00d, source, Some(&mut destination)), expected, "{name}, length {length}");
                assert_eq!(destination, source, "{name}, length {length}");
            }
        }
    }

    #[test]
    fn the_shift_tables_move_a_register_over_zeros() {
        // Appending n zeros to a checksum is what the shift does to the raw register.
        for (table, bytes) in [(&SHIFT, STREAM_BYTES), (&SHORT_SHIFT, SHORT_STREAM_BYTES)] {
            for register in [1u32, 0x8000_0000, 0xdead_beef] {
                let shifted = shift(table, u64::from(register)) as u32;
                assert_eq!(shifted, shift_slowly(register, bytes), "{bytes}-byte table");
                let zeros = vec![0u8; bytes];
                assert_eq!(!crc32c::crc32c_append(!register, &zeros), shifted, "{bytes}-byte table");
            }
        }
    }
}
