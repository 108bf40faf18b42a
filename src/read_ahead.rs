//! Reading the next segment from disk while recovery checks the current one, from a
//! helper thread.
//!
//! Why a thread: putting a segment's pages in the page cache costs CPU (allocating the
//! pages, building and submitting the reads: ~20 ms of system time per 64 MiB here),
//! and on the scanning thread that time adds to the checksumming instead of running
//! beside it. And why in pieces: `POSIX_FADV_WILLNEED` reads at most the device's
//! readahead size per call (8 MiB here, 128 KiB by default), so one call per segment
//! left most of it to the scan's own synchronous reads. W4 cold replay of 1 GiB (19
//! segments of 64 MiB) on one machine within the hour: one call per segment on the
//! scanning thread 1.09–1.39 s; a call per MiB on the scanning thread 0.98–1.00 s
//! (system time 0.25 → 0.45 s); the same calls from this thread 0.71–0.95 s, where a
//! plain sequential read of the files takes 0.76–0.80 s. In the benchmark, side by
//! side: 1.24× → 1.12× the raw sequential read.
//!
//! The thread stays one segment ahead of the scan: at most two segments are read ahead
//! of what the scan has consumed, whatever the log's size.

use crate::reader::ReadAt;
use crate::sync::{self, Condvar, Mutex};

/// Bytes asked for per `POSIX_FADV_WILLNEED` (a call reads at most the readahead size).
pub(crate) const PREFETCH_PIECE_BYTES: u64 = 1 << 20;

/// What the scan tells the helper: which segment it is in, and whether it is done.
#[derive(Default)]
pub(crate) struct ScanProgress {
    state: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Default)]
struct Progress {
    segment_index: usize,
    done: bool,
}

impl ScanProgress {
    /// The scan has started on segment `index`.
    pub(crate) fn entered(&self, index: usize) {
        sync::lock(&self.state).segment_index = index;
        self.changed.notify_all();
    }

    fn finish(&self) {
        sync::lock(&self.state).done = true;
        self.changed.notify_all();
    }

    /// Waits until the scan is in segment `index` or later; `false` once it is done.
    fn wait_for(&self, index: usize) -> bool {
        let mut state = sync::lock(&self.state);
        while state.segment_index < index && !state.done {
            state = sync::wait(&self.changed, state);
        }
        !state.done
    }
}

/// Runs `scan` over `sources` (segments, in order) with a helper thread that has the
/// kernel read each segment while the scan is in the one before it. `scan` reports
/// its progress through the [`ScanProgress`] it is given. Sources that cannot be read
/// ahead ([`ReadAt::prefetch`] does nothing for them) get no thread.
pub(crate) fn with_read_ahead<S: ReadAt + Sync + ?Sized, R>(sources: &[&S], scan: impl FnOnce(&ScanProgress) -> R) -> R {
    let progress = ScanProgress::default();
    if !sources.first().is_some_and(|source| source.can_prefetch()) {
        return scan(&progress);
    }
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new().name("segstore-read-ahead".into()).spawn_scoped(scope, || {
            for (index, source) in sources.iter().enumerate() {
                if !progress.wait_for(index.saturating_sub(1)) {
                    return;
                }
                source.prefetch();
            }
        });
        let result = {
            // Finished even when the scan panics: the scope joins the helper before the
            // panic goes on, and a helper still waiting for progress would never return.
            let _finish = FinishOnDrop(&progress);
            scan(&progress)
        };
        // A helper that could not be started only means no reading ahead; one that
        // panicked is a bug, reported with its own message rather than hidden.
        if let Some(Err(panic)) = helper.ok().map(|helper| helper.join()) {
            std::panic::resume_unwind(panic);
        }
        result
    })
}

/// Marks the scan done when dropped, unwinding included.
struct FinishOnDrop<'a>(&'a ScanProgress);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A segment that records when it was read ahead, against the scan's progress.
    struct Segment<'a> {
        index: usize,
        scanning: &'a AtomicUsize,
        prefetched_during: Mutex<Option<usize>>,
    }

    impl ReadAt for Segment<'_> {
        fn read_exact_at(&self, _buffer: &mut [u8], _offset: u64) -> io::Result<()> {
            Ok(())
        }

        fn prefetch(&self) {
            *self.prefetched_during.lock().unwrap() = Some(self.scanning.load(Ordering::SeqCst));
            assert!(self.index <= self.scanning.load(Ordering::SeqCst) + 1, "segment {} read ahead too early", self.index);
        }

        fn can_prefetch(&self) -> bool {
            true
        }
    }

    fn segments(scanning: &AtomicUsize, count: usize) -> Vec<Segment<'_>> {
        (0..count).map(|index| Segment { index, scanning, prefetched_during: Mutex::new(None) }).collect()
    }

    #[test]
    fn each_segment_is_read_ahead_while_the_scan_is_in_the_one_before() {
        let scanning = AtomicUsize::new(0);
        let segments = segments(&scanning, 6);
        let sources: Vec<&Segment<'_>> = segments.iter().collect();
        let scanned = with_read_ahead(&sources, |progress| {
            for index in 0..segments.len() {
                scanning.store(index, Ordering::SeqCst);
                progress.entered(index);
                // Give the helper its chance to read the next segment ahead.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while index + 1 < segments.len()
                    && segments[index + 1].prefetched_during.lock().unwrap().is_none()
                    && std::time::Instant::now() < deadline
                {
                    std::thread::yield_now();
                }
            }
            segments.len()
        });
        assert_eq!(scanned, 6);
        for segment in &segments {
            let during = segment.prefetched_during.lock().unwrap().expect("every segment was read ahead");
            assert!(during + 1 >= segment.index, "segment {} read ahead while the scan was in {during}", segment.index);
        }
    }

    #[test]
    fn a_panicking_scan_stops_the_helper_and_its_panic_goes_on() {
        // Without the scan marked done on unwinding, the scope would wait for the helper
        // forever: run it on a thread of its own (hence the leaks, for 'static) and fail
        // after a while instead of hanging.
        let scanning: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let segments: &'static [Segment<'static>] = segments(scanning, 50).leak();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let sources: Vec<&Segment<'_>> = segments.iter().collect();
            let outcome = std::panic::catch_unwind(|| {
                with_read_ahead(&sources, |progress| {
                    scanning.store(1, Ordering::SeqCst);
                    progress.entered(1);
                    panic!("scan failed");
                })
            });
            let message = outcome.expect_err("the scan's panic goes on").downcast::<&str>().map(|message| *message);
            sender.send(message.ok()).unwrap();
        });
        let message = receiver.recv_timeout(std::time::Duration::from_secs(30)).expect("with_read_ahead returned");
        assert_eq!(message, Some("scan failed"));
    }

    #[test]
    fn a_panicking_helper_is_reported_not_hidden() {
        static PREFETCHING: AtomicUsize = AtomicUsize::new(0);
        struct Failing;
        impl ReadAt for Failing {
            fn read_exact_at(&self, _buffer: &mut [u8], _offset: u64) -> io::Result<()> {
                Ok(())
            }

            fn prefetch(&self) {
                PREFETCHING.fetch_add(1, Ordering::SeqCst);
                panic!("prefetch failed");
            }

            fn can_prefetch(&self) -> bool {
                true
            }
        }
        let sources = [&Failing, &Failing];
        let outcome = std::panic::catch_unwind(|| {
            with_read_ahead(&sources, |progress| {
                progress.entered(1);
                // A scan that ended first would leave the helper nothing to read.
                while PREFETCHING.load(Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
            })
        });
        let payload = outcome.expect_err("the helper's panic is not swallowed");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"prefetch failed"));
    }

    #[test]
    fn a_scan_that_stops_early_stops_the_helper() {
        let scanning = AtomicUsize::new(0);
        let segments = segments(&scanning, 50);
        let sources: Vec<&Segment<'_>> = segments.iter().collect();
        with_read_ahead(&sources, |progress| {
            scanning.store(1, Ordering::SeqCst);
            progress.entered(1);
        });
        // Returned (the helper was joined), and nothing past the next segment was read.
        assert!(segments[3..].iter().all(|segment| segment.prefetched_during.lock().unwrap().is_none()));
    }
}
