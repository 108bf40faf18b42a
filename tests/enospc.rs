//! A full disk, for real (ARCHITECTURE.md, failure model): a log on a small loop-mounted ext4 (and
//! XFS, when `mkfs.xfs` is installed) file system, filled up by another file, with
//! several threads appending durably. Preparing the next segment must fail with ENOSPC
//! (from fallocate or the zero-fill, never as SIGBUS in a writer), the log must stop
//! (`Error::Poisoned`), appends that fit in the segment already prepared must still be
//! acknowledged, no temporary file may be left, and after a remount with space freed a
//! fresh open must recover every acknowledged record byte for byte.
//!
//! The writer runs in a child process (this binary again), so that a SIGBUS would show
//! as a failed test instead of killing the test run. Mounting needs root: elsewhere,
//! and where loop devices cannot be mounted, each test prints why it skipped and passes.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use segstore::{Error, Log, Position, SyncMode};

use common::{files_ending_in, options, wait_for_prepared_segment, ChildTest, KIND};

const WRITER_THREADS: u32 = 4;
const ENOSPC: i32 = 28;
const SIGBUS: i32 = 7;
/// Tells this binary, run again, to be the writer: the value is the mount point.
const CHILD_MOUNT_ENV: &str = "SEGSTORE_ENOSPC_CHILD_MOUNT";
const CHILD_SEGMENT_SIZE_ENV: &str = "SEGSTORE_ENOSPC_CHILD_SEGMENT_BYTES";
const CHILD_TEST_NAME: &str = "enospc_writer_child";
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);
const LOG_DIRECTORY_NAME: &str = "log";
const FILLER_NAME: &str = "filler";
/// Starts every line the writer prints for the parent (the test harness may print
/// before it on the same line).
const LINE_TAG: &str = "@@ ";

/// The tests of this file run one at a time: a process one of them spawns holds copies of
/// every descriptor of this process until it execs, among them the directory lock
/// (`flock`) of a log another test just dropped, whose next open then fails as
/// `AlreadyInUse`.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone, Copy, Debug)]
enum FileSystem {
    Ext4,
    Xfs,
}

impl FileSystem {
    fn mkfs(self) -> &'static str {
        match self {
            FileSystem::Ext4 => "mkfs.ext4",
            FileSystem::Xfs => "mkfs.xfs",
        }
    }

    fn mkfs_arguments(self) -> &'static [&'static str] {
        match self {
            // No blocks reserved for root: the writer runs as root and would use them.
            FileSystem::Ext4 => &["-q", "-F", "-m", "0"],
            FileSystem::Xfs => &["-q", "-f"],
        }
    }

    fn image_size_bytes(self) -> u64 {
        match self {
            FileSystem::Ext4 => 64 << 20,
            // mkfs.xfs refuses file systems below about 300 MB.
            FileSystem::Xfs => 320 << 20,
        }
    }

    /// A few segments fit on the empty file system.
    fn segment_size_bytes(self) -> u64 {
        match self {
            FileSystem::Ext4 => 8 << 20,
            FileSystem::Xfs => 32 << 20,
        }
    }
}

#[test]
fn ext4_full_disk_fails_preparation_and_loses_nothing() {
    full_disk_scenario(FileSystem::Ext4);
}

#[test]
fn xfs_full_disk_fails_preparation_and_loses_nothing() {
    full_disk_scenario(FileSystem::Xfs);
}

// ---------------------------------------------------------------------------------------
// The records: each names its writer and sequence number, so any recovered record can be
// checked against the bytes that writer appended without the parent having seen them.

fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// 1 to 32 KiB: a segment takes a few hundred of them.
fn payload(thread: u32, sequence: u32) -> Vec<u8> {
    let seed = u64::from(thread) << 32 | u64::from(sequence);
    let length = 1024 + (mix(seed) % (31 << 10)) as usize;
    let mut bytes = Vec::with_capacity(length + 8);
    bytes.extend_from_slice(&thread.to_le_bytes());
    bytes.extend_from_slice(&sequence.to_le_bytes());
    let mut state = seed;
    while bytes.len() < length {
        state = mix(state);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

fn identity(payload: &[u8]) -> Option<(u32, u32)> {
    let thread = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let sequence = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    Some((thread, sequence))
}

// ---------------------------------------------------------------------------------------
// The parent.

fn full_disk_scenario(file_system: FileSystem) {
    if let Some(reason) = skip_reason(file_system) {
        println!("skipping the {file_system:?} ENOSPC test: {reason}");
        return;
    }
    let _one_at_a_time = one_at_a_time();
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let image = scratch.path().join("fs.img");
    let mount_point = scratch.path().join("mnt");
    std::fs::create_dir(&mount_point).unwrap();
    File::create(&image).unwrap().set_len(file_system.image_size_bytes()).unwrap();
    if let Err(reason) = run_tool(Command::new(find_tool(file_system.mkfs()).unwrap()).args(file_system.mkfs_arguments()).arg(&image)) {
        println!("skipping the {file_system:?} ENOSPC test: {} failed: {reason}", file_system.mkfs());
        return;
    }
    let mut mount = match LoopMount::mount(&image, &mount_point) {
        Ok(mount) => mount,
        Err(reason) => {
            println!("skipping the {file_system:?} ENOSPC test: cannot mount a loop device here: {reason}");
            return;
        }
    };
    let segment_size_bytes = file_system.segment_size_bytes();
    let log_directory = mount_point.join(LOG_DIRECTORY_NAME);

    let writer = run_writer(&mount_point, segment_size_bytes);
    let report = WriterReport::parse(&writer.stdout);
    let context =
        || format!("{file_system:?} writer {}\nstdout tail:\n{}\nstderr:\n{}", writer.status, tail(&writer.stdout, 40), writer.stderr);
    assert_ne!(writer.status.signal(), Some(SIGBUS), "the writer died of SIGBUS: {}", context());
    assert!(writer.status.success(), "the writer failed: {}", context());

    // The preparer failed, with ENOSPC, on the segment after the one appended to.
    let failure = report.preparer_failure.as_ref().unwrap_or_else(|| panic!("no preparer failure was logged: {}", context()));
    assert_eq!(failure.thread, "segstore-preparer", "{}", context());
    assert!(failure.message.contains("preparing segment"), "{}", context());
    let free_bytes = report.free_bytes_before_appends.unwrap_or_else(|| panic!("the writer did not fill the disk: {}", context()));
    assert!(
        free_bytes < segment_size_bytes,
        "{free_bytes} bytes were free before the appends: a segment of {segment_size_bytes} would fit"
    );
    // Every writer stopped on the same root cause: Poisoned by the failed preparation.
    assert_eq!(report.errors.len(), WRITER_THREADS as usize, "every writer ends on an error: {}", context());
    for error in &report.errors {
        assert!(error.poisoned, "writer {} got {} instead of Error::Poisoned", error.thread, error.display);
        assert!(
            ["fallocate", "zero-fill", "flush zero-fill"].contains(&error.operation.as_str()),
            "writer {}: root cause {} is not the segment's allocation",
            error.thread,
            error.display
        );
        assert_eq!(error.errno, ENOSPC, "writer {}: {}", error.thread, error.display);
    }
    // Appends into the segment prepared before the disk filled went on after the failure.
    let acknowledged_after_failure = report.acknowledged.len() as u64 - failure.acknowledged_before;
    assert!(acknowledged_after_failure > 0, "nothing was acknowledged after the preparer failed: {}", context());
    let last_end = report.acknowledged.values().map(|(_, end)| *end).max().unwrap();
    assert!(
        last_end > segment_size_bytes,
        "acknowledged appends stopped at {last_end}, in the first segment: the prepared second one went unused"
    );
    assert!(report.leftover_temporary_files.is_empty(), "the failed preparation left {:?}", report.leftover_temporary_files);
    assert!(files_ending_in(&log_directory, ".tmp").is_empty(), "the failed preparation left a temporary file");

    // A remount drops everything cached: what is read now is what the device holds.
    mount.remount();
    let while_full = Log::open_read_only(&log_directory).unwrap_or_else(|error| panic!("read-only open on the full disk: {error}"));
    assert_recovers(&while_full, &report.acknowledged, "read-only, disk still full");
    drop(while_full);
    // The log ends in a sealed segment (the rotation that failed sealed it), so a
    // writable open must prepare a segment, and fails the same way, leaving nothing.
    let writable_while_full = match Log::open(&log_directory, options(segment_size_bytes, SyncMode::Msync)) {
        Err(error) => error,
        Ok(_) => panic!("a writable open on the full disk prepared a segment of {segment_size_bytes} bytes"),
    };
    assert!(
        enospc_operation(&writable_while_full)
            .is_some_and(|operation| ["fallocate", "zero-fill", "flush zero-fill"].contains(&operation.as_str())),
        "a writable open on the full disk failed with {writable_while_full:?}"
    );
    assert!(files_ending_in(&log_directory, ".tmp").is_empty(), "an open on the full disk left a temporary file");
    std::fs::remove_file(mount_point.join(FILLER_NAME)).unwrap();
    mount.remount();

    let log = Log::open(&log_directory, options(segment_size_bytes, SyncMode::Msync)).unwrap_or_else(|error| panic!("reopen: {error}"));
    let recovered = assert_recovers(&log, &report.acknowledged, "writable, space freed");
    let appended = log.append_durable(KIND, &payload(WRITER_THREADS, 0)).expect("the recovered log takes appends");
    assert_eq!(log.read(appended.position).unwrap().payload, payload(WRITER_THREADS, 0));
    log.close().unwrap();
    mount.unmount().unwrap();

    println!(
        "{file_system:?}: {} appends acknowledged ({acknowledged_after_failure} after the preparer failed: {}), \
         {recovered} records recovered, {} bytes free when the appends began; \
         first writer to fail: {}, every writer ended on: {}; a writable open on the still-full disk fails: {writable_while_full}; {:.1} s",
        report.acknowledged.len(),
        failure.message,
        free_bytes,
        report.errors[0].thread,
        report.errors[0].display,
        started.elapsed().as_secs_f64()
    );
}

/// The failed operation if `error` (or its root cause) is an I/O error with ENOSPC.
fn enospc_operation(error: &Error) -> Option<String> {
    match error.root_cause() {
        Error::Io { operation, source, .. } if source.raw_os_error() == Some(ENOSPC) => Some(operation.to_string()),
        _ => None,
    }
}

/// Checks that `log` holds every acknowledged record byte for byte, and only records
/// the writers appended; returns how many it holds.
fn assert_recovers(log: &Log, acknowledged: &BTreeMap<u64, ((u32, u32), u64)>, case: &str) -> usize {
    let mut recovered = BTreeMap::new();
    for record in log.iter_from(Position(0)) {
        let record = record.unwrap_or_else(|error| panic!("{case}: reading the log: {error}"));
        let (thread, sequence) =
            identity(&record.payload).unwrap_or_else(|| panic!("{case}: a record at {} names no writer", record.position.0));
        assert!(
            record.payload == payload(thread, sequence),
            "{case}: the record at {} is not what writer {thread} appended as #{sequence}",
            record.position.0
        );
        recovered.insert(record.position.0, ((thread, sequence), record.end.0));
    }
    for (position, expected) in acknowledged {
        assert_eq!(recovered.get(position), Some(expected), "{case}: the acknowledged record at {position} was not recovered");
    }
    recovered.len()
}

fn skip_reason(file_system: FileSystem) -> Option<String> {
    match effective_user_id() {
        Some(0) => {}
        Some(user) => return Some(format!("mounting a loop device needs root; running as user {user}")),
        None => return Some("cannot tell the effective user id from /proc/self/status".into()),
    }
    for tool in ["mount", "umount", file_system.mkfs()] {
        if find_tool(tool).is_none() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn effective_user_id() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `tool` on the PATH or in an sbin directory (absent from some non-login PATHs).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|directory| directory.join(tool))
        .find(|candidate| candidate.is_file())
}

fn run_tool(command: &mut Command) -> Result<(), String> {
    let output = command.stdin(Stdio::null()).output().map_err(|error| format!("{command:?}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command:?}: {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A loop-mounted image, unmounted when dropped, also when the test panics.
struct LoopMount {
    image: PathBuf,
    directory: PathBuf,
    mounted: bool,
}

impl LoopMount {
    fn mount(image: &Path, directory: &Path) -> Result<LoopMount, String> {
        run_tool(Command::new(find_tool("mount").unwrap()).args(["-o", "loop"]).arg(image).arg(directory))?;
        Ok(LoopMount { image: image.to_path_buf(), directory: directory.to_path_buf(), mounted: true })
    }

    fn unmount(&mut self) -> Result<(), String> {
        if !self.mounted {
            return Ok(());
        }
        // A process that just exited may still hold the file system for a moment.
        let mut attempt = 0;
        loop {
            match run_tool(Command::new(find_tool("umount").unwrap()).arg(&self.directory)) {
                Ok(()) => break,
                Err(reason) if attempt >= 50 => return Err(reason),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
            attempt += 1;
        }
        self.mounted = false;
        Ok(())
    }

    fn remount(&mut self) {
        self.unmount().unwrap();
        *self = LoopMount::mount(&self.image, &self.directory).unwrap();
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if self.mounted && self.unmount().is_err() {
            let _ = run_tool(Command::new(find_tool("umount").unwrap()).arg("-l").arg(&self.directory));
        }
    }
}

struct WriterOutput {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

fn run_writer(mount_point: &Path, segment_size_bytes: u64) -> WriterOutput {
    let mut child = ChildTest::spawn(
        CHILD_TEST_NAME,
        &[(CHILD_MOUNT_ENV, mount_point.as_os_str().to_owned()), (CHILD_SEGMENT_SIZE_ENV, segment_size_bytes.to_string().into())],
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let stdout_reader = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.0.kill();
            let stdout = stdout_reader.join().unwrap();
            panic!("the writer hung for {CHILD_TIMEOUT:?}; stdout tail:\n{}", tail(&stdout, 40));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    WriterOutput { status, stdout: stdout_reader.join().unwrap(), stderr: stderr_reader.join().unwrap() }
}

fn tail(lines: &[String], count: usize) -> String {
    lines[lines.len().saturating_sub(count)..].join("\n")
}

struct PreparerFailure {
    /// Appends acknowledged when the failure was logged.
    acknowledged_before: u64,
    thread: String,
    message: String,
}

struct WriterError {
    thread: u32,
    poisoned: bool,
    operation: String,
    errno: i32,
    display: String,
}

/// What the writer printed, one fact a line.
#[derive(Default)]
struct WriterReport {
    /// Position → ((thread, sequence), end) of every acknowledged record.
    acknowledged: BTreeMap<u64, ((u32, u32), u64)>,
    preparer_failure: Option<PreparerFailure>,
    errors: Vec<WriterError>,
    free_bytes_before_appends: Option<u64>,
    leftover_temporary_files: Vec<String>,
}

impl WriterReport {
    fn parse(lines: &[String]) -> WriterReport {
        let mut report = WriterReport::default();
        for line in lines.iter().filter_map(|line| line.split_once(LINE_TAG).map(|(_, fact)| fact)) {
            let fields: Vec<&str> = line.splitn(6, ' ').collect();
            match fields[..] {
                ["ack", thread, sequence, position, end] => {
                    let identity = (thread.parse().unwrap(), sequence.parse().unwrap());
                    let previous = report.acknowledged.insert(position.parse().unwrap(), (identity, end.parse().unwrap()));
                    assert!(previous.is_none(), "two acknowledgments of position {position}");
                }
                ["log", acknowledged, "ERROR", thread, ..] if report.preparer_failure.is_none() => {
                    let message = line.splitn(5, ' ').nth(4).unwrap_or_default().to_string();
                    report.preparer_failure =
                        Some(PreparerFailure { acknowledged_before: acknowledged.parse().unwrap(), thread: thread.to_string(), message });
                }
                ["error", thread, poisoned, operation, errno, display] => report.errors.push(WriterError {
                    thread: thread.parse().unwrap(),
                    poisoned: poisoned == "poisoned",
                    operation: operation.replace('_', " "),
                    errno: errno.parse().unwrap(),
                    display: display.to_string(),
                }),
                ["free", bytes] => report.free_bytes_before_appends = Some(bytes.parse().unwrap()),
                ["temporary", ..] => report.leftover_temporary_files.push(line["temporary ".len()..].to_string()),
                _ => {}
            }
        }
        report
    }
}

// ---------------------------------------------------------------------------------------
// The writer, in the child process.

/// Appends acknowledged so far, for the logger to say when the preparer failed.
static ACKNOWLEDGED: AtomicU64 = AtomicU64::new(0);

/// Prints every warning and error the crate logs, with the thread that logged it.
struct PrintingLogger;

impl log::Log for PrintingLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let thread = std::thread::current().name().unwrap_or("unnamed").replace(' ', "_");
            println!("{LINE_TAG}log {} {} {thread} {}", ACKNOWLEDGED.load(Ordering::SeqCst), record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: PrintingLogger = PrintingLogger;

#[test]
#[ignore = "the writer process of the ENOSPC tests, run by them"]
fn enospc_writer_child() {
    let Some(mount_point) = std::env::var_os(CHILD_MOUNT_ENV).map(PathBuf::from) else { return };
    let segment_size_bytes: u64 = std::env::var(CHILD_SEGMENT_SIZE_ENV).unwrap().parse().unwrap();
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);

    let log_directory = mount_point.join(LOG_DIRECTORY_NAME);
    let log = Log::open(&log_directory, options(segment_size_bytes, SyncMode::Msync)).unwrap();
    // The second segment is ready before the disk fills: only the third cannot be made.
    wait_for_prepared_segment(&log);
    let free_bytes = fill_file_system(&mount_point.join(FILLER_NAME), segment_size_bytes / 2);
    println!("{LINE_TAG}free {free_bytes}");

    std::thread::scope(|scope| {
        for thread in 0..WRITER_THREADS {
            let log = &log;
            scope.spawn(move || {
                for sequence in 0.. {
                    match log.append_durable(KIND, &payload(thread, sequence)) {
                        Ok(appended) => {
                            // Counted before printed, so the logger never under-counts.
                            ACKNOWLEDGED.fetch_add(1, Ordering::SeqCst);
                            println!("{LINE_TAG}ack {thread} {sequence} {} {}", appended.position.0, appended.end.0);
                        }
                        Err(error) => {
                            let (operation, errno) = match error.root_cause() {
                                Error::Io { operation, source, .. } => (operation.replace(' ', "_"), source.raw_os_error().unwrap_or(-1)),
                                other => (format!("{other:?}").replace(' ', "_"), -1),
                            };
                            let poisoned = if matches!(error, Error::Poisoned { .. }) { "poisoned" } else { "not-poisoned" };
                            println!("{LINE_TAG}error {thread} {poisoned} {operation} {errno} {error}");
                            return;
                        }
                    }
                }
            });
        }
    });
    for name in files_ending_in(&log_directory, ".tmp") {
        println!("{LINE_TAG}temporary {name}");
    }
    // Dropped, not closed: a poisoned log has nothing more to make durable.
    drop(log);
}

/// Writes a file until the file system is full, then frees `leave_bytes` of it; returns
/// the bytes free (to root) after that.
fn fill_file_system(path: &Path, leave_bytes: u64) -> u64 {
    let mut file = File::create(path).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    let mut written_bytes = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(count) => written_bytes += count as u64,
            Err(error) if error.raw_os_error() == Some(ENOSPC) => break,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    file.sync_all().unwrap();
    file.set_len(written_bytes.saturating_sub(leave_bytes)).unwrap();
    file.sync_all().unwrap();
    let statistics = rustix::fs::statvfs(path.parent().unwrap()).unwrap();
    statistics.f_bfree * statistics.f_frsize
}
