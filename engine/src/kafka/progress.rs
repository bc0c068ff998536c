//! At-least-once bookkeeping for one partition, free of I/O.
//!
//! Offsets are consumed in order and processed concurrently; results may finish in any
//! order. Results are *produced* in offset order (a finished result waits for every earlier
//! one), so the output keeps the partition's order. The commit position is the lowest offset
//! whose result (or dead-letter record) the broker has not acknowledged yet: everything before
//! it is done, nothing after it is committed.

use std::collections::{BTreeMap, BTreeSet};

pub struct Partition<R> {
    /// Consumed, not yet acknowledged by the broker.
    undelivered: BTreeSet<i64>,
    /// Consumed, not yet handed to the producer (in offset order).
    unproduced: BTreeSet<i64>,
    /// Finished out of order, waiting for an earlier offset.
    ready: BTreeMap<i64, R>,
    /// One past the highest offset consumed.
    high: i64,
    /// The last position committed (or the start).
    committed: i64,
}

impl<R> Partition<R> {
    /// A partition whose next offset to consume is `start`.
    pub fn new(start: i64) -> Partition<R> {
        Partition {
            undelivered: BTreeSet::new(),
            unproduced: BTreeSet::new(),
            ready: BTreeMap::new(),
            high: start,
            committed: start,
        }
    }

    pub fn consumed(&mut self, offset: i64) {
        self.undelivered.insert(offset);
        self.unproduced.insert(offset);
        self.high = self.high.max(offset + 1);
    }

    /// A result is ready; returns the results that can now be produced, in offset order.
    pub fn finished(&mut self, offset: i64, result: R) -> Vec<(i64, R)> {
        self.ready.insert(offset, result);
        let mut out = Vec::new();
        while let Some(&next) = self.unproduced.first() {
            match self.ready.remove(&next) {
                Some(r) => {
                    self.unproduced.remove(&next);
                    out.push((next, r));
                }
                None => break,
            }
        }
        out
    }

    /// The broker acknowledged the result of `offset`.
    pub fn delivered(&mut self, offset: i64) {
        self.undelivered.remove(&offset);
    }

    /// The position it is safe to commit: every offset before it is done.
    pub fn position(&self) -> i64 {
        self.undelivered.first().copied().unwrap_or(self.high)
    }

    /// The position to commit, if it moved since the last commit.
    pub fn to_commit(&mut self) -> Option<i64> {
        let p = self.position();
        (p > self.committed).then(|| {
            self.committed = p;
            p
        })
    }

    /// Messages consumed and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.undelivered.len()
    }

    /// Results finished out of order and waiting here for an earlier one: what dropping this
    /// partition's bookkeeping (its assignment ended) lets go of with it. Everything else of
    /// it in flight is still processing or producing, and is let go of as that ends.
    pub fn parked(&self) -> usize {
        self.ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_produced_in_order_and_commits_follow_acknowledgements() {
        let mut p: Partition<&str> = Partition::new(10);
        for o in 10..14 {
            p.consumed(o);
        }
        assert_eq!(p.position(), 10);
        // 12 and 11 finish first: nothing can be produced before 10.
        assert!(p.finished(12, "c").is_empty());
        assert!(p.finished(11, "b").is_empty());
        assert_eq!(p.finished(10, "a"), vec![(10, "a"), (11, "b"), (12, "c")]);
        assert_eq!(p.to_commit(), None, "produced is not acknowledged");
        p.delivered(10);
        p.delivered(12);
        // 11 is not acknowledged: the position stops there.
        assert_eq!(p.to_commit(), Some(11));
        assert_eq!(p.to_commit(), None);
        p.delivered(11);
        assert_eq!(p.to_commit(), Some(13), "13 is still in flight");
        assert_eq!(p.finished(13, "d"), vec![(13, "d")]);
        p.delivered(13);
        assert_eq!(p.to_commit(), Some(14));
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn results_waiting_for_an_earlier_one_are_counted_as_parked() {
        let mut p: Partition<&str> = Partition::new(10);
        for o in 10..13 {
            p.consumed(o);
        }
        assert!(p.finished(11, "b").is_empty());
        assert!(p.finished(12, "c").is_empty());
        // Revoked now: 10 is still processing, 11 and 12 go with the bookkeeping.
        assert_eq!(p.parked(), 2);
        assert_eq!(p.finished(10, "a").len(), 3);
        assert_eq!(p.parked(), 0);
    }
}
