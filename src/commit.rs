//! Group commit: the durable watermark, the one syncer at a time, and fail-stop.
//!
//! A thread waiting for a position either becomes the syncer or waits for the sync in
//! progress. The syncer takes the published frontier as its target, syncs everything
//! from the durable watermark to it in one call, and only if that call succeeded moves
//! the watermark. One sync thus covers every record published before it started. A
//! failed sync poisons the log: every waiter and every later call gets the error, and
//! no sync is ever retried (after a failed writeback the kernel may report the next
//! sync as successful while the disk holds old bytes).

use std::sync::Arc as StdArc;

use crate::error::{Error, Result};
use crate::sync::{self, AtomicBool, AtomicU32, AtomicU64, Mutex, Ordering, WaitWord};

#[derive(Default)]
struct CommitState {
    syncing: bool,
    /// Syncs started so far; the one in progress (if any) is number `syncs - 1`.
    syncs: u64,
    /// Where the sync in progress ends, once its syncer has taken its target.
    sync_target: Option<u64>,
    poison: Option<StdArc<Error>>,
}

/// The durable watermark and the syncer election.
///
/// Waiters sleep on one of two wait words by the parity of the sync that will cover
/// them: the one in progress (its target is at or past theirs, or not yet taken) or the
/// next one. When a sync ends, everyone it covered is woken, and of those who need the
/// next sync exactly one, to run it. With many writers, each sync thus wakes only the
/// threads it released plus one, not every thread waiting; and a woken thread checks
/// the durable watermark without the state lock, so the threads one sync releases do
/// not queue for that lock one after another.
pub struct GroupCommit {
    durable_position: AtomicU64,
    poisoned: AtomicBool,
    state: Mutex<CommitState>,
    /// Changed, and slept on, by the parity of the sync that covers the sleepers.
    synced: [WaitWord; 2],
    /// Threads registered to sleep on each word: a wake-up (a futex syscall) only for a
    /// non-zero count. Raised under the state lock, lowered after waking without it.
    sleepers: [AtomicU32; 2],
}

impl GroupCommit {
    /// Everything below `durable_position` is already durable.
    pub fn new(durable_position: u64) -> Self {
        GroupCommit {
            durable_position: AtomicU64::new(durable_position),
            poisoned: AtomicBool::new(false),
            state: Mutex::new(CommitState::default()),
            synced: [WaitWord::new(), WaitWord::new()],
            sleepers: [AtomicU32::new(0), AtomicU32::new(0)],
        }
    }

    /// Every byte below this position was covered by a successful sync.
    pub fn durable_position(&self) -> u64 {
        self.durable_position.load(Ordering::Acquire)
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// The error every call returns once the log is poisoned.
    pub fn poison_error(&self) -> Option<Error> {
        sync::lock(&self.state).poison.as_ref().map(|cause| Error::Poisoned { cause: StdArc::clone(cause) })
    }

    /// Fails the log for good with `cause` (the first cause wins) and wakes every waiter.
    pub fn poison(&self, cause: Error) -> Error {
        let mut state = sync::lock(&self.state);
        self.poison_locked(&mut state, cause)
    }

    /// [`GroupCommit::poison`] with the state already locked: clearing the syncer flag and
    /// recording the failure must be one step, or another waiter could sync again.
    fn poison_locked(&self, state: &mut CommitState, cause: Error) -> Error {
        let cause = match cause {
            Error::Poisoned { cause } => cause,
            other => StdArc::new(other),
        };
        let cause = StdArc::clone(state.poison.get_or_insert(cause));
        self.poisoned.store(true, Ordering::Release);
        self.synced.iter().for_each(|word| word.change_and_wake(u32::MAX));
        Error::Poisoned { cause }
    }

    fn check_poison(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.poison_error().expect("poisoned implies a cause"));
        }
        Ok(())
    }

    /// Returns once every byte below `target` is durable. `published_frontier` says how
    /// far records are published; `sync_range(from, to)` makes `[from, to)` durable.
    /// Both are called by the elected syncer only, never concurrently.
    pub fn wait_durable(
        &self,
        target: u64,
        published_frontier: &dyn Fn() -> u64,
        sync_range: &dyn Fn(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let mut round = 0u32;
        let mut contended;
        loop {
            self.check_poison()?;
            if self.durable_position() >= target {
                return Ok(());
            }
            {
                let mut state = sync::lock(&self.state);
                if let Some(cause) = &state.poison {
                    return Err(Error::Poisoned { cause: StdArc::clone(cause) });
                }
                if self.durable_position() >= target {
                    return Ok(());
                }
                if state.syncing {
                    let current = state.syncs - 1;
                    let covering = if state.sync_target.is_none_or(|end| target <= end) { current } else { current + 1 };
                    let parity = (covering % 2) as usize;
                    // Registered and the word read under the lock, which the syncer
                    // holds to change it: a change after this read is never missed.
                    self.sleepers[parity].fetch_add(1, Ordering::AcqRel);
                    let seen = self.synced[parity].load();
                    drop(state);
                    self.synced[parity].wait(seen);
                    self.sleepers[parity].fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                state.syncing = true;
                state.syncs += 1;
                state.sync_target = None;
                contended = self.sleepers.iter().any(|sleepers| sleepers.load(Ordering::Acquire) > 0);
            }
            let mut election = Election { commit: self, done: false };
            let from = self.durable_position();
            let mut to = published_frontier();
            if contended {
                // Other threads are waiting too: writers that the last sync released are
                // about to publish their next records. Yielding a few times lets them, so
                // that this sync covers them instead of the one after; it stops as soon
                // as the frontier stands still. A lone writer (no waiters) never lingers.
                for _ in 0..LINGER_YIELDS {
                    sync::spin_wait(u32::MAX);
                    let now = published_frontier();
                    if now == to {
                        break;
                    }
                    to = now;
                }
            }
            sync::lock(&self.state).sync_target = Some(to);
            let result = if to > from { sync_range(from, to) } else { Ok(()) };
            election.done = true;
            {
                let mut state = sync::lock(&self.state);
                state.syncing = false;
                match result {
                    Ok(()) => {
                        self.durable_position.fetch_max(to, Ordering::AcqRel);
                        let covered = ((state.syncs - 1) % 2) as usize;
                        if self.sleepers[covered].load(Ordering::Acquire) > 0 {
                            self.synced[covered].change_and_wake(u32::MAX);
                        }
                        if self.sleepers[1 - covered].load(Ordering::Acquire) > 0 {
                            // They need another sync: one of them runs it for all.
                            self.synced[1 - covered].change_and_wake(1);
                        }
                    }
                    Err(cause) => return Err(self.poison_locked(&mut state, cause)),
                }
            }
            if to < target {
                // A record below ours is still being written: give its writer time.
                backoff(round);
                round = round.saturating_add(1);
            }
        }
    }
}

/// Resets the syncer flag (and poisons: the sync's outcome is unknown) if the syncer
/// unwinds, so that waiters are never left waiting for a sync that will not finish.
struct Election<'a> {
    commit: &'a GroupCommit,
    done: bool,
}

impl Drop for Election<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut state = sync::lock(&self.commit.state);
            state.syncing = false;
            self.commit.poison_locked(&mut state, Error::invalid("a sync panicked; its outcome is unknown"));
        }
    }
}

/// How many times an elected syncer with company yields for more records at most.
#[cfg(not(loom))]
const LINGER_YIELDS: u32 = 8;
#[cfg(loom)]
const LINGER_YIELDS: u32 = 1;

fn backoff(round: u32) {
    #[cfg(not(loom))]
    if round >= 128 {
        std::thread::sleep(std::time::Duration::from_micros(20));
        return;
    }
    sync::spin_wait(round);
}
