//! Writes a log from several threads in a child process, kills it with SIGKILL in the
//! middle of its work, recovers the log and checks that every record the child had
//! acknowledged as durable is there, byte for byte.
//!
//!     cargo run --release --example crash_recover [-- DIRECTORY]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use segstore::{Log, Options, Position, RecordKind, SyncMode};

const KIND: RecordKind = RecordKind(16);
const WRITER_THREADS: u32 = 4;
const RUN_BEFORE_KILL: Duration = Duration::from_millis(1500);

/// The payload writer `thread` appends as its `sequence`-th record: its identity, then
/// bytes derived from it, so that the parent can rebuild it without having seen it.
fn payload(thread: u32, sequence: u32) -> Vec<u8> {
    let length = 16 + (sequence.wrapping_mul(2_654_435_761) ^ thread) as usize % 2000;
    let mut bytes = Vec::with_capacity(length);
    bytes.extend_from_slice(&thread.to_le_bytes());
    bytes.extend_from_slice(&sequence.to_le_bytes());
    let mut state = u64::from(thread) << 32 | u64::from(sequence);
    while bytes.len() < length {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        bytes.push((state >> 56) as u8);
    }
    bytes
}

fn options() -> Options {
    // Small segments, so that the run crosses many segment rotations.
    Options { segment_size_bytes: 1 << 20, sync_mode: SyncMode::Msync }
}

fn child(directory: &Path) -> segstore::Result<()> {
    let log = Log::open(directory, options())?;
    std::thread::scope(|scope| {
        for thread in 0..WRITER_THREADS {
            let log = &log;
            scope.spawn(move || {
                for sequence in 0.. {
                    let appended = log.append_durable(KIND, &payload(thread, sequence)).expect("append");
                    // Printed only once durable: the parent holds us to every line.
                    println!("ack {thread} {sequence} {}", appended.position.0);
                }
            });
        }
    });
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().collect();
    if arguments.get(1).map(String::as_str) == Some("--child") {
        child(Path::new(&arguments[2]))?;
        return Ok(());
    }
    let temporary = tempfile::tempdir_in(".")?;
    let directory: PathBuf = arguments.get(1).map(PathBuf::from).unwrap_or_else(|| temporary.path().join("log"));

    let mut writer = Command::new(std::env::current_exe()?).arg("--child").arg(&directory).stdout(Stdio::piped()).spawn()?;
    let lines = BufReader::new(writer.stdout.take().expect("piped stdout"));
    let started = Instant::now();
    let mut acknowledged: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    for line in lines.lines() {
        let line = line?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["ack", thread, sequence, position] = fields[..] {
            acknowledged.insert(position.parse()?, (thread.parse()?, sequence.parse()?));
        }
        if started.elapsed() >= RUN_BEFORE_KILL {
            writer.kill()?; // SIGKILL: no destructor, no final sync.
            break;
        }
    }
    writer.wait()?;
    println!("writer: {WRITER_THREADS} threads, {} durable appends acknowledged, then killed with SIGKILL", acknowledged.len());

    let opened = Instant::now();
    let log = Log::open(&directory, options())?;
    let report = log.recovery_report().clone();
    println!(
        "recovery: {} records in {} segments in {:.1} ms; torn tail: {}",
        report.data_records,
        report.segments,
        opened.elapsed().as_secs_f64() * 1e3,
        report.torn_tail.as_deref().unwrap_or("none")
    );

    let mut recovered = BTreeMap::new();
    for record in log.iter_from(Position(0)) {
        let record = record?;
        let thread = u32::from_le_bytes(record.payload[0..4].try_into()?);
        let sequence = u32::from_le_bytes(record.payload[4..8].try_into()?);
        if record.payload != payload(thread, sequence) {
            return Err(format!("record at {} is not what writer {thread} appended as #{sequence}", record.position.0).into());
        }
        recovered.insert(record.position.0, (thread, sequence));
    }
    let missing: Vec<_> = acknowledged.iter().filter(|(position, identity)| recovered.get(position) != Some(identity)).collect();
    if !missing.is_empty() {
        return Err(format!("{} acknowledged records lost, first: {:?}", missing.len(), missing[0]).into());
    }
    println!(
        "check: all {} acknowledged records recovered byte-identical ({} more were written but not yet acknowledged)",
        acknowledged.len(),
        recovered.len() - acknowledged.len()
    );
    let appended = log.append_durable(KIND, &payload(WRITER_THREADS, 0))?;
    println!("the recovered log takes new appends: one more record at position {}", appended.position.0);
    log.close()?;
    Ok(())
}
