//! The last reference per source: durable idempotency state that lives with the log.
//!
//! Every journaled command carries an [`Origin`]: the submitter's `source` (an API key id, a
//! service id; 0 when unnamed) and its own `reference` for the command (a client reference).
//! A submitter that numbers its commands with strictly increasing references (the binary
//! gateway does, per API key) must keep doing so across its own restarts and the node's, so
//! at login it asks the node for the highest reference it ever sequenced for that source:
//! [`crate::Node::last_reference`]. This module keeps that table.
//!
//! # What it holds
//!
//! For every source other than 0, the maximum `Origin::reference` over all commands with
//! that source, whatever the engine made of them (a rejected command still used up its
//! reference). Reference 0 never raises an entry, and a source whose references were all 0
//! has none; source 0 (unnamed: the Python `Node`, tests, tools) is never tracked. A source
//! with no entry reads as 0. The node records references; it does not enforce that they
//! increase — that is the submitter's contract, which the table lets it keep.
//!
//! The table is a function of the journal alone: after any restart it equals what replaying
//! the whole journal from seq 1 would give, however the node got there.
//!
//! # Where it lives, and why
//!
//! It is owned by the **engine thread**, next to the engine, and updated there as each
//! command is applied:
//!
//! * That thread sees every sequenced command exactly once, in sequence order, with its
//!   origin — the same stream recovery replays, through the same [`LastReferences::observe`].
//! * Snapshots are cut there, between two commands. Copying the table in the same pause as
//!   the engine state gives the table *as of the snapshot's seq* with no coordination; the
//!   sequencer runs ahead of the engine (its view includes durable commands not yet applied)
//!   and the publisher behind it, so a table kept on either would have to be reconciled with
//!   the snapshot's seq.
//! * The sequencer thread (journal, group commit) is the pipeline's bottleneck; one hash-map
//!   update beside an engine `apply` is noise on the engine thread.
//! * It is not part of the engine: origins are a node concept (the engine never sees them),
//!   and the engine's state hash covers market state only.
//!
//! # What a reader sees
//!
//! Answers reflect commands the engine has **applied**. A command still in a client's ring,
//! in the sequencer's batch or in the engine's ring is not counted yet, so a submitter that
//! asks while its own commands are in flight must also keep its own maximum of the
//! references it has handed in, and continue above the larger of the two. After a restart
//! nothing is in flight: recovery applies every durable command before the node starts, so
//! the table then covers everything that was ever sequenced; a submission that never became
//! durable was never sequenced and is not in it.
//!
//! # Persistence
//!
//! Snapshot files (format 2, [`crate::snapfile`]) carry the table as of their seq, as a list
//! of `(source, reference)` pairs in increasing source order; recovery starts from the
//! snapshot's table and observes every journal record replayed after it. Compaction deletes
//! only journal records older than the oldest kept snapshot, which holds the table up to
//! them, so nothing is lost.
//!
//! # Cost
//!
//! [`LastReferences::observe`]: two compares and, for a named source with a non-zero
//! reference, one `FxHashMap` look-up-or-insert: O(1). Memory: one entry (16 bytes plus the
//! map's overhead) per source ever seen; entries are never dropped (a source id could come
//! back). A snapshot copies the table (O(sources)) on the engine thread; sorting it happens
//! on the snapshot writer.

use rustc_hash::FxHashMap;

use crate::journal::Origin;

/// The highest reference sequenced per source (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastReferences {
    last: FxHashMap<u64, u64>,
}

impl LastReferences {
    /// An empty table.
    pub fn new() -> LastReferences {
        LastReferences::default()
    }

    /// Account for one sequenced command's origin. Source 0 and reference 0 are ignored.
    #[inline]
    pub fn observe(&mut self, origin: Origin) {
        if origin.source == 0 || origin.reference == 0 {
            return;
        }
        let last = self.last.entry(origin.source).or_insert(0);
        if origin.reference > *last {
            *last = origin.reference;
        }
    }

    /// The highest reference sequenced for `source`; 0 if none (and always 0 for source 0).
    pub fn get(&self, source: u64) -> u64 {
        self.last.get(&source).copied().unwrap_or(0)
    }

    /// Sources with an entry.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no source has an entry.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// The entries in no particular order (a cheap copy, for the engine thread's snapshot
    /// pause; sort it elsewhere).
    pub fn to_unsorted_vec(&self) -> Vec<(u64, u64)> {
        self.last.iter().map(|(&s, &r)| (s, r)).collect()
    }

    /// The entries in increasing source order.
    pub fn to_sorted_vec(&self) -> Vec<(u64, u64)> {
        let mut v = self.to_unsorted_vec();
        v.sort_unstable();
        v
    }

    /// A table from `(source, reference)` entries as [`check_entries`] accepts them.
    pub fn from_entries(entries: &[(u64, u64)]) -> Result<LastReferences, String> {
        check_entries(entries)?;
        let mut last = FxHashMap::default();
        last.reserve(entries.len());
        last.extend(entries.iter().copied());
        Ok(LastReferences { last })
    }
}

/// Check a persisted table: sources strictly increasing (so each appears once), and neither
/// a source nor a reference of 0 (such entries are never made, so one means damage or a
/// foreign writer).
pub fn check_entries(entries: &[(u64, u64)]) -> Result<(), String> {
    let mut previous: Option<u64> = None;
    for (i, &(source, reference)) in entries.iter().enumerate() {
        if source == 0 {
            return Err(format!("last-reference entry {i} is for source 0, which is never kept"));
        }
        if reference == 0 {
            return Err(format!(
                "last-reference entry {i} (source {source}) has reference 0, which is never kept"
            ));
        }
        if previous.is_some_and(|p| p >= source) {
            return Err(format!(
                "last-reference entries are not in strictly increasing source order at entry \
                 {i} (source {source})"
            ));
        }
        previous = Some(source);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(source: u64, reference: u64) -> Origin {
        Origin { source, reference }
    }

    #[test]
    fn keeps_the_maximum_per_named_source() {
        let mut t = LastReferences::new();
        for (s, r) in [(7, 5), (7, 3), (9, 1), (7, 8), (0, 100), (9, 0), (11, 0), (9, 2)] {
            t.observe(o(s, r));
        }
        assert_eq!((t.get(7), t.get(9), t.get(11), t.get(0), t.get(12)), (8, 2, 0, 0, 0));
        assert_eq!(t.to_sorted_vec(), vec![(7, 8), (9, 2)]);
        assert_eq!(t.len(), 2, "reference 0 alone makes no entry");
        let back = LastReferences::from_entries(&t.to_sorted_vec()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn persisted_entries_are_checked() {
        assert!(check_entries(&[]).is_ok());
        assert!(check_entries(&[(1, 1), (2, u64::MAX)]).is_ok());
        assert!(check_entries(&[(0, 1)]).unwrap_err().contains("source 0"));
        assert!(check_entries(&[(3, 0)]).unwrap_err().contains("reference 0"));
        assert!(check_entries(&[(3, 1), (3, 2)]).unwrap_err().contains("increasing"));
        assert!(check_entries(&[(4, 1), (3, 2)]).unwrap_err().contains("increasing"));
    }
}
