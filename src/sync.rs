//! The concurrency primitives of the crate, in one place, so that `--cfg loom`
//! model-checks the real code: under loom they are loom's, otherwise std's.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Gives other threads a chance to make progress while this one waits for them.
pub(crate) fn spin_wait(round: u32) {
    #[cfg(loom)]
    {
        let _ = round;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if round < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Locks `mutex`, ignoring poisoning: every structure guarded here stays consistent
/// across a panic (a panicking writer's reservation is published as a skip record).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Waits on `condvar`, ignoring poisoning as [`lock`] does.
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    match condvar.wait(guard) {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A 32-bit word that threads sleep on until it changes, with no mutex to take back on
/// waking (a futex): a thread woken among many need not queue for a lock only to find
/// its work done. Under loom, a mutex and condition variable with the same semantics.
pub struct WaitWord {
    word: AtomicU32,
    #[cfg(loom)]
    lock: Mutex<()>,
    #[cfg(loom)]
    changed: Condvar,
}

impl Default for WaitWord {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitWord {
    pub fn new() -> Self {
        WaitWord {
            word: AtomicU32::new(0),
            #[cfg(loom)]
            lock: Mutex::new(()),
            #[cfg(loom)]
            changed: Condvar::new(),
        }
    }

    pub fn load(&self) -> u32 {
        self.word.load(Ordering::Acquire)
    }

    /// Sleeps while the word is `expected`. May return without a change: callers check
    /// what they wait for and come back.
    pub fn wait(&self, expected: u32) {
        #[cfg(not(loom))]
        {
            // EAGAIN (the word changed first) and EINTR are returns like any other.
            let _ = rustix::thread::futex::wait(&self.word, rustix::thread::futex::Flags::PRIVATE, expected, None);
        }
        #[cfg(loom)]
        {
            let guard = lock(&self.lock);
            if self.word.load(Ordering::Acquire) == expected {
                drop(wait(&self.changed, guard));
            }
        }
    }

    /// Changes the word, then wakes `count` of the threads sleeping on it (all for
    /// `u32::MAX`). Threads about to sleep with the old value do not sleep.
    pub fn change_and_wake(&self, count: u32) {
        self.word.fetch_add(1, Ordering::AcqRel);
        #[cfg(not(loom))]
        {
            // Cannot fail for a valid address; a failure would leave waiters to their
            // next wake-up, never to a wrong result.
            let _ = rustix::thread::futex::wake(&self.word, rustix::thread::futex::Flags::PRIVATE, count.min(i32::MAX as u32));
        }
        #[cfg(loom)]
        {
            let _guard = lock(&self.lock);
            if count == 1 {
                self.changed.notify_one();
            } else {
                self.changed.notify_all();
            }
        }
    }
}
