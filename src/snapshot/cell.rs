//! The read-copy-update cell that hands snapshots to the workers.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::Snapshot;

/// The one read-copy-update cell between control and data plane.
///
/// `load` is wait-free and does not allocate; `publish` swaps the pointer
/// and the old snapshot is freed when the last worker drops its guard.
#[derive(Debug)]
pub struct SnapshotCell {
    inner: ArcSwap<Snapshot>,
    /// Snapshots replaced by a publish, kept until no worker holds them,
    /// so that they are freed here, on the control plane's thread, by a
    /// later publish. Dropped by the worker's guard instead, the last
    /// reference would free the slot table's and the VIP index's chunks
    /// (a hundred reference counts and a few frees) in the middle of a
    /// burst. Only publishers take the lock.
    retired: Mutex<Vec<Arc<Snapshot>>>,
}

impl SnapshotCell {
    /// A cell holding `snapshot`.
    pub fn new(snapshot: Snapshot) -> SnapshotCell {
        SnapshotCell {
            inner: ArcSwap::from_pointee(snapshot),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The current snapshot, for one burst. Hold the guard for the burst
    /// only: a worker that kept it would keep released versions alive.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.inner.load()
    }

    /// The current snapshot as an owned reference (control plane use).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.inner.load_full()
    }

    /// Makes `snapshot` the current one for every worker's next burst.
    pub fn publish(&self, snapshot: Snapshot) {
        self.publish_arc(Arc::new(snapshot));
    }

    /// [`SnapshotCell::publish`] of a snapshot the caller keeps a reference
    /// to (the control plane derives the next one from it).
    pub fn publish_arc(&self, snapshot: Arc<Snapshot>) {
        let old = self.inner.swap(snapshot);
        // A poisoned lock only means a publisher panicked while it held
        // the list; the list itself is still valid.
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        // Frees, here, those that only this list still holds.
        retired.retain(|s| Arc::strong_count(s) > 1);
        retired.push(old);
    }

    /// Replaced snapshots not freed yet (tests).
    #[cfg(test)]
    pub(super) fn retired(&self) -> usize {
        self.retired.lock().map_or(0, |r| r.len())
    }
}
