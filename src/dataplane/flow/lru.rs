//! The flow table's lists: one LRU list per timeout class, ordered by
//! last packet, and the free list of nodes. Links are node indices in the
//! slab; `NIL` ends a list.
//!
//! Everything that links, unlinks, evicts or frees a node is here, so that
//! the table's lookups in `flow.rs` read as lookups.

use super::{Class, FlowState, FlowTable, Node, CLASSES, FREE_PROTOCOL, NIL};

/// The ends of one LRU list.
#[derive(Clone, Copy, Debug)]
pub(super) struct List {
    /// Most recently seen.
    pub(super) head: u32,
    /// Least recently seen.
    pub(super) tail: u32,
}

impl FlowTable {
    /// The oldest list tail that has expired at `now`. Expired entries of a
    /// list form its tail end, so this finds the oldest expired entry.
    pub(super) fn oldest_expired(&self, now: u64) -> Option<u32> {
        self.tails()
            .filter(|&i| self.is_expired(&self.nodes[i as usize], now))
            .min_by_key(|&i| self.nodes[i as usize].last_seen)
    }

    /// The least recently seen node of each non-empty list.
    pub(super) fn tails(&self) -> impl Iterator<Item = u32> + '_ {
        CLASSES
            .iter()
            .map(|&c| self.lists[c as usize].tail)
            .filter(|&t| t != NIL)
    }

    /// Frees one node of a full table: the oldest expired entry if any,
    /// else the least recently seen one (the oldest of the three tails).
    pub(super) fn make_room(&mut self, now: u64) {
        if let Some(idx) = self.oldest_expired(now) {
            self.remove_node(idx);
        } else if let Some(idx) = self
            .tails()
            .min_by_key(|&i| self.nodes[i as usize].last_seen)
        {
            self.remove_node(idx);
            self.evictions = self.evictions.saturating_add(1);
        }
    }

    /// Takes node `idx` out of the index, its list and the counts, and puts
    /// it on the free list.
    pub(super) fn remove_node(&mut self, idx: u32) {
        let node = &self.nodes[idx as usize];
        let hash = self.index_hash(&node.key());
        let class = node.class();
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.unlink(idx, class);
        self.uncount(idx);
        let node = &mut self.nodes[idx as usize];
        node.next = self.free;
        // Marks it free for `lookup_located`.
        node.protocol = FREE_PROTOCOL;
        self.changes = self.changes.wrapping_add(1);
        self.free = idx;
        self.len = self.len.saturating_sub(1);
    }

    /// Decrements the count of node `idx`'s version unless the entry is
    /// stale (its slot now belongs to another version).
    pub(super) fn uncount(&mut self, idx: u32) {
        let node = &self.nodes[idx as usize];
        if self.is_stale(node) || node.state != FlowState::Open {
            return;
        }
        if let Some(c) = self.counts.get_mut(node.slot as usize) {
            *c = c.saturating_sub(1);
        }
    }

    pub(super) fn pop_free(&mut self) -> Option<u32> {
        let idx = self.free;
        let node = self.nodes.get(idx as usize)?;
        self.free = node.next;
        Some(idx)
    }

    /// Unlinks `idx` from the list of `class` (the class it was linked
    /// under, which may differ from its current state's).
    pub(super) fn unlink(&mut self, idx: u32, class: Class) {
        let Node { prev, next, .. } = self.nodes[idx as usize];
        let list = &mut self.lists[class as usize];
        match self.nodes.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => list.head = next,
        }
        match self.nodes.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => list.tail = prev,
        }
    }

    /// Links `idx` at the head of the list of its current class.
    pub(super) fn push_front(&mut self, idx: u32) {
        let class = self.nodes[idx as usize].class();
        let list = &mut self.lists[class as usize];
        let old = list.head;
        list.head = idx;
        if old == NIL {
            list.tail = idx;
        }
        if let Some(h) = self.nodes.get_mut(old as usize) {
            h.prev = idx;
        }
        let node = &mut self.nodes[idx as usize];
        node.prev = NIL;
        node.next = old;
    }
}
