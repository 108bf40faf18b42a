//! Entries handed to a caller during the scan that opens a log, so that a node booting
//! from its log reads every byte once, not once to open and again to replay.
//!
//! An entry read during the scan may still be dropped by a later record (Raft's
//! overwrite rule) until a hard state commits it: Raft never rewrites a committed
//! entry. So the feed holds each entry until a later hard state's `commit` covers it,
//! then hands it over; entries still held when the scan ends are live and go last. A
//! log that rewrites an entry already handed over breaks Raft's rule and fails the
//! open. Held entries are bounded: past [`MAX_HELD_BYTES`] the feed stops holding and
//! the caller reads the rest back from the log once it is open.

use std::collections::VecDeque;

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::raftpb::Entry;

/// Payload bytes held at most while waiting for a commit: the uncommitted tail of a
/// healthy log is a save or two; a longer one is read back after the scan instead.
pub(crate) const MAX_HELD_BYTES: usize = 64 << 20;

pub(crate) struct CommittedFeed<'v> {
    visit: &'v mut dyn FnMut(Entry),
    /// Entries at or below this index are never handed over (the snapshot covers them).
    after_index: u64,
    /// Entries waiting for a commit, with their encoded sizes.
    held: VecDeque<(Entry, usize)>,
    held_bytes: usize,
    max_held_bytes: usize,
    /// The feed gave up holding: entries past `delivered_through` come from the log.
    overflowed: bool,
    delivered_through: Option<u64>,
}

impl<'v> CommittedFeed<'v> {
    /// A feed of the entries above `after_index` to `visit`, holding at most
    /// `max_held_bytes` of entries while they wait for a commit.
    pub(crate) fn new(after_index: u64, max_held_bytes: usize, visit: &'v mut dyn FnMut(Entry)) -> Self {
        CommittedFeed {
            visit,
            after_index,
            held: VecDeque::new(),
            held_bytes: 0,
            max_held_bytes,
            overflowed: false,
            delivered_through: None,
        }
    }

    /// The entry at `index` (encoded as `payload`, at log `position`) joined the log,
    /// after every held entry at `index` or above was dropped. `restarted`: the log
    /// starts afresh at `index` (after an installed snapshot), dropping all held ones.
    pub(crate) fn entry(&mut self, index: u64, position: u64, payload: &[u8], restarted: bool) -> Result<()> {
        if let Some(delivered) = self.delivered_through.filter(|&delivered| index <= delivered) {
            return Err(Error::CommittedEntryRewritten { index, position, delivered_through: delivered });
        }
        if restarted {
            self.drop_held_from(0);
        } else {
            self.drop_held_from(index);
        }
        if self.overflowed || index <= self.after_index {
            return Ok(());
        }
        let entry =
            Entry::decode(Bytes::copy_from_slice(payload)).map_err(|error| Error::BadRecord { position, reason: error.to_string() })?;
        self.held_bytes += payload.len();
        self.held.push_back((entry, payload.len()));
        if self.held_bytes > self.max_held_bytes {
            self.overflowed = true;
            self.drop_held_from(0);
        }
        Ok(())
    }

    /// A hard state committed everything up to `commit`: hand those entries over.
    pub(crate) fn commit(&mut self, commit: u64) {
        while self.held.front().is_some_and(|(entry, _)| entry.index <= commit) {
            let (entry, bytes) = self.held.pop_front().expect("checked non-empty");
            self.held_bytes -= bytes;
            self.delivered_through = Some(entry.index);
            (self.visit)(entry);
        }
    }

    /// The scan ended: hands over the entries still held (live, not yet committed).
    /// If the feed gave up holding, returns the first index it did not hand over: the
    /// caller reads on from there in the opened log, or from the log's first index if
    /// that is later (a restart after an installed snapshot dropped the ones between).
    pub(crate) fn finish(mut self) -> Option<u64> {
        if self.overflowed {
            return Some(self.delivered_through.unwrap_or(self.after_index) + 1);
        }
        self.commit(u64::MAX);
        None
    }

    fn drop_held_from(&mut self, index: u64) {
        while self.held.back().is_some_and(|(entry, _)| entry.index >= index) {
            let (_, bytes) = self.held.pop_back().expect("checked non-empty");
            self.held_bytes -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(index: u64, data_bytes: usize) -> Vec<u8> {
        Entry::new(1, index, Bytes::from(vec![index as u8; data_bytes])).encode_to_vec()
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.index).collect()
    }

    #[test]
    fn entries_wait_for_a_commit_and_overwritten_ones_never_come() {
        let mut seen = Vec::new();
        let mut visit = |entry: Entry| seen.push(entry);
        let mut feed = CommittedFeed::new(1, MAX_HELD_BYTES, &mut visit);
        for index in 1..=4 {
            feed.entry(index, index * 100, &encoded(index, 10), false).unwrap();
        }
        feed.commit(2);
        // 3 and 4 are rewritten before any commit covers them.
        feed.entry(3, 500, &encoded(3, 20), false).unwrap();
        assert!(feed.finish().is_none());
        assert_eq!(indexes(&seen), [2, 3]);
        assert_eq!(seen[1].data.as_ref().map(Bytes::len), Some(20), "the rewritten entry 3, not the first");
    }

    #[test]
    fn rewriting_a_handed_over_entry_is_an_error() {
        let mut visit = |_: Entry| {};
        let mut feed = CommittedFeed::new(0, MAX_HELD_BYTES, &mut visit);
        for index in 1..=3 {
            feed.entry(index, index * 100, &encoded(index, 10), false).unwrap();
        }
        feed.commit(2);
        feed.entry(3, 400, &encoded(3, 10), false).unwrap();
        match feed.entry(2, 500, &encoded(2, 10), false) {
            Err(Error::CommittedEntryRewritten { index: 2, position: 500, delivered_through: 2 }) => {}
            other => panic!("expected CommittedEntryRewritten, got {other:?}"),
        }
    }

    #[test]
    fn past_its_bound_the_feed_leaves_the_rest_to_the_log() {
        let mut seen = Vec::new();
        let mut visit = |entry: Entry| seen.push(entry);
        let mut feed = CommittedFeed::new(0, 100, &mut visit);
        feed.entry(1, 0, &encoded(1, 10), false).unwrap();
        feed.commit(1);
        for index in 2..=20 {
            feed.entry(index, index * 100, &encoded(index, 10), false).unwrap();
        }
        // Held entries were dropped once past 100 bytes; later commits hand over nothing.
        feed.commit(20);
        assert_eq!(feed.finish(), Some(2));
        assert_eq!(indexes(&seen), [1]);
    }

    #[test]
    fn a_restart_drops_what_is_held() {
        let mut seen = Vec::new();
        let mut visit = |entry: Entry| seen.push(entry);
        let mut feed = CommittedFeed::new(0, MAX_HELD_BYTES, &mut visit);
        for index in 1..=3 {
            feed.entry(index, index * 100, &encoded(index, 10), false).unwrap();
        }
        feed.commit(1);
        feed.entry(101, 400, &encoded(101, 10), true).unwrap();
        assert!(feed.finish().is_none());
        assert_eq!(indexes(&seen), [1, 101]);
    }
}
