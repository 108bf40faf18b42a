//! The in-memory index of Raft entries: for each live index, where its record is and
//! its term. 8 bytes per entry for the position, plus one 16-byte run per change of
//! term (terms change rarely), so about 8 bytes per entry in all.
//!
//! Replay and appends follow Raft's overwrite rule: an entry at index `i` drops every
//! entry at `i` or above before it is appended. The rule applies to every entry, also
//! to those at or below a snapshot, so that an overwrite of entries the snapshot covers
//! still drops the stale entries above it (etcd applies it only above the snapshot and
//! can resurrect them, etcd#22442).

use std::collections::VecDeque;

/// Why an entry cannot join the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexGap {
    /// The index the entry should have had (one past the last).
    pub expected: u64,
    pub found: u64,
}

/// Positions and terms of a contiguous run of entries `first_index..=last_index`.
#[derive(Clone, Debug, Default)]
pub struct EntryIndex {
    /// Index of `positions[0]`; meaningful only when there are entries.
    first_index: u64,
    positions: VecDeque<u64>,
    /// `(first index, term)` of each run of equal terms, in index order.
    term_runs: VecDeque<(u64, u64)>,
}

impl EntryIndex {
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// The first index held, if any.
    pub fn first_index(&self) -> Option<u64> {
        (!self.is_empty()).then_some(self.first_index)
    }

    /// The last index held, if any.
    pub fn last_index(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.first_index + self.positions.len() as u64 - 1)
    }

    /// Bytes of heap this index uses.
    pub fn heap_bytes(&self) -> usize {
        self.positions.capacity() * std::mem::size_of::<u64>() + self.term_runs.capacity() * std::mem::size_of::<(u64, u64)>()
    }

    /// Records that entry `index` of `term` is at `position`, dropping every entry at
    /// `index` or above first. The index must not leave a hole: at most one past the last.
    /// An empty index accepts any index.
    pub fn append(&mut self, index: u64, term: u64, position: u64) -> Result<(), IndexGap> {
        match self.last_index() {
            None => {
                self.first_index = index;
            }
            Some(last) if index > last + 1 => return Err(IndexGap { expected: last + 1, found: index }),
            Some(_) if index < self.first_index => {
                self.clear();
                self.first_index = index;
            }
            Some(_) => self.truncate_from(index),
        }
        self.positions.push_back(position);
        if self.term_runs.back().is_none_or(|&(_, last_term)| last_term != term) {
            self.term_runs.push_back((index, term));
        }
        Ok(())
    }

    /// Drops every entry at `index` or above.
    pub fn truncate_from(&mut self, index: u64) {
        if index <= self.first_index {
            self.clear();
            return;
        }
        let keep = (index - self.first_index) as usize;
        self.positions.truncate(keep);
        while self.term_runs.back().is_some_and(|&(run_start, _)| run_start >= index) {
            self.term_runs.pop_back();
        }
    }

    /// Drops every entry below `index`.
    pub fn compact_to(&mut self, index: u64) {
        let Some(last) = self.last_index() else { return };
        if index > last {
            self.clear();
            return;
        }
        if index <= self.first_index {
            return;
        }
        let drop_count = (index - self.first_index) as usize;
        self.positions.drain(..drop_count);
        self.first_index = index;
        // Keep the run covering `index`, restarted at it.
        while self.term_runs.len() > 1 && self.term_runs[1].0 <= index {
            self.term_runs.pop_front();
        }
        if let Some(first_run) = self.term_runs.front_mut() {
            first_run.0 = index;
        }
    }

    pub fn clear(&mut self) {
        self.positions.clear();
        self.term_runs.clear();
    }

    /// Where entry `index` is, if held.
    pub fn position(&self, index: u64) -> Option<u64> {
        let offset = index.checked_sub(self.first_index)?;
        self.positions.get(usize::try_from(offset).ok()?).copied()
    }

    /// The term of entry `index`, if held.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.position(index)?;
        let run = self.term_runs.partition_point(|&(run_start, _)| run_start <= index);
        Some(self.term_runs[run - 1].1)
    }

    /// The smallest position of any entry held (the first one's: positions grow with index).
    pub fn first_position(&self) -> Option<u64> {
        self.positions.front().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model: index → (term, position), with the same overwrite rule.
    fn check_against_model(operations: &[(u64, u64)]) {
        let mut index = EntryIndex::default();
        let mut model: Vec<(u64, u64, u64)> = Vec::new();
        for (position, &(entry_index, term)) in operations.iter().enumerate() {
            let position = position as u64 * 100;
            let gap = model.last().is_some_and(|&(last, _, _)| entry_index > last + 1);
            let result = index.append(entry_index, term, position);
            assert_eq!(result.is_err(), gap);
            if !gap {
                model.retain(|&(i, _, _)| i < entry_index);
                model.push((entry_index, term, position));
            }
            assert_eq!(index.len(), model.len());
            for &(i, t, p) in &model {
                assert_eq!((index.term(i), index.position(i)), (Some(t), Some(p)), "entry {i} after {operations:?}");
            }
        }
    }

    #[test]
    fn appends_and_overwrites_follow_the_model() {
        check_against_model(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (3, 2), (4, 2)]);
        check_against_model(&[(5, 1), (6, 1), (7, 2), (6, 3), (7, 3), (8, 3)]);
        check_against_model(&[(1, 1), (2, 1), (9, 1), (3, 4), (1, 5)]);
        check_against_model(&[(10, 1), (11, 2), (12, 3), (11, 4), (12, 4), (13, 5), (13, 6)]);
    }

    #[test]
    fn an_overwrite_below_the_first_index_restarts_the_index() {
        let mut index = EntryIndex::default();
        for i in 5..10 {
            index.append(i, 1, i * 10).unwrap();
        }
        index.append(3, 2, 1000).unwrap();
        assert_eq!((index.first_index(), index.last_index()), (Some(3), Some(3)));
        assert_eq!(index.term(3), Some(2));
        assert_eq!(index.term(5), None);
    }

    #[test]
    fn compaction_keeps_terms_right() {
        let mut index = EntryIndex::default();
        for i in 1..=10 {
            index
                .append(
                    i,
                    if i <= 4 {
                        1
                    } else if i <= 7 {
                        2
                    } else {
                        3
                    },
                    i,
                )
                .unwrap();
        }
        index.compact_to(6);
        assert_eq!(index.first_index(), Some(6));
        assert_eq!(index.term(5), None);
        assert_eq!((index.term(6), index.term(7), index.term(8), index.term(10)), (Some(2), Some(2), Some(3), Some(3)));
        index.compact_to(11);
        assert!(index.is_empty());
    }

    #[test]
    fn an_entry_costs_about_eight_bytes() {
        let mut index = EntryIndex::default();
        let count = 1 << 16;
        for i in 0..count {
            index.append(i, i / 1000, i * 600).unwrap();
        }
        let bytes_per_entry = index.heap_bytes() as f64 / count as f64;
        assert!(bytes_per_entry <= 16.0, "{bytes_per_entry} bytes per entry");
    }
}
