//! The per-worker flow table: the first lookup of a packet's journey.
//!
//! After the pipeline has found the packet's version from its destination
//! address, it asks this table whether the flow already has a backend. A hit
//! sends the packet where the flow's first packet went, even if that backend
//! has since failed its health check and left the Maglev table; a miss falls
//! through to Maglev, and the pipeline inserts the answer here.
//!
//! One table per worker, used by that worker alone (RSS or fanout keeps a
//! flow on one worker), so nothing here is `Sync` and nothing locks. All
//! memory is reserved in `FlowTable::new`; no operation allocates after
//! that. The table is sans-IO: the caller passes `now` (nanoseconds from any
//! monotonic clock) and the table never reads a clock.
//!
//! The table is bounded: when it is full the least recently seen flow goes.
//! That never breaks a healthy version's connection, because Maglev gives
//! the evicted flow the same backend again; it only loses the stickiness
//! that protects flows of an unhealthy backend.

use hashbrown::HashTable;

use super::hugepages::HugePages;
use super::prefetch::prefetch;

mod entry;
mod index_hash;
mod key;
mod lru;
mod node;

use entry::{initial_state, Class, CLASSES};
use index_hash::IndexHasher;
use lru::List;
use node::{Node, FREE_PROTOCOL};

pub use entry::{FlowEntry, FlowState, FlowTimeouts, TcpFlags, VersionRef};
pub use key::{hash_3tuple, FlowKey};

/// End of a list, and "no node".
const NIL: u32 = u32::MAX;
/// Largest capacity: node indices are `u32` and `NIL` is reserved.
pub const MAX_CAPACITY: usize = (NIL - 1) as usize;

/// Where [`FlowTable::locate`] found a candidate for a flow's entry (a node
/// index, or nowhere), and when: the table's count of entries added and
/// removed at the time. Only a hint, for the table that made it:
/// [`FlowTable::lookup_located`] uses the node only once it has compared
/// the node's key with the flow's, and trusts "nowhere" only when that
/// count has not moved since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    node: u32,
    changes: u64,
}

impl Located {
    /// Not located at all: the lookup probes the index.
    pub const NOWHERE: Located = Located {
        node: NIL,
        changes: u64::MAX,
    };
}

/// A bounded, preallocated flow table with exact idle expiry, LRU eviction
/// and per-version active-flow counts.
///
/// Index: a `hashbrown::HashTable` of `u32` node indices keyed by a
/// randomly keyed hash of the 5-tuple (`index_hash.rs`: clients choose
/// their tuples, so the index must not be predictable); it reserves twice
/// the capacity so that deletions can always be cleaned up in place and it
/// never grows.
/// Nodes live in a slab of 64-byte lines, linked into three LRU lists (one
/// per timeout class) or the free list. Both are in transparent huge pages
/// where the kernel has them ([`HugePages`]): sized for the configured
/// maximum, they are far larger than the flows they hold, and in small
/// pages each lookup missed the TLB.
pub struct FlowTable {
    index: HashTable<u32, HugePages>,
    hasher: IndexHasher,
    nodes: allocator_api2::boxed::Box<[Node], HugePages>,
    free: u32,
    lists: [List; 3],
    /// Idle timeout per `Class` plus the refresh slack, `2^refresh_shift -
    /// 1` (saturating): what an entry's real last packet may be later than
    /// its stored `last_seen`, added so that no entry expires early. Added
    /// up here once rather than per packet.
    expiry: [u64; 3],
    /// Refresh granularity as a power of two of `now`'s unit (0: exact).
    /// A hit within the same `now >> refresh_shift` tick as the entry's
    /// stored `last_seen` writes nothing (see [`FlowTable::with_refresh`]).
    refresh_shift: u32,
    len: usize,
    /// Latest `now` seen; a `now` that goes backwards is raised to it so the
    /// lists stay ordered by last packet.
    clock: u64,
    /// `clock >> refresh_shift`, kept with it: the tick a hit compares with.
    clock_tick: u64,
    evictions: u64,
    /// Entries added and removed so far: what tells `lookup_located` that
    /// a location is still exact.
    changes: u64,
    /// Active flows per version slot (entries of the slot's current uid).
    counts: Box<[u32]>,
    /// Per version slot: the bound uid and its generation, side by side
    /// so that a hit reads both with one bounds check and one cache line.
    slots: Box<[SlotBinding]>,
}

/// What a version slot is bound to (see [`FlowTable::bind_version`]).
#[derive(Clone, Copy, Debug, Default)]
struct SlotBinding {
    uid: u64,
    /// Bumped on every rebind: entries written under an older generation
    /// are stale.
    gen: u32,
}

impl FlowTable {
    /// A table of `capacity` flows (clamped to `MAX_CAPACITY`) for version
    /// slots `0..max_versions`. Allocates all its memory now — 64 bytes per
    /// flow for the node plus 10 to 20 for the index — and writes the nodes,
    /// so that the fast path never allocates. Every slot starts bound to
    /// uid 0.
    pub fn new(capacity: usize, max_versions: usize, timeouts: FlowTimeouts) -> Self {
        FlowTable::with_refresh(capacity, max_versions, timeouts, 0)
    }

    /// Like [`FlowTable::new`], but a hit refreshes an entry only when
    /// `now >> refresh_shift` differs from its stored `last_seen`'s (a
    /// change of TCP state always refreshes it).
    ///
    /// Why: an exact LRU moves the entry to the head of its list on every
    /// packet, which writes three nodes — a third of a hit's work. With a
    /// tick of about a millisecond (`refresh_shift = 20` for nanoseconds), a
    /// flow of a few thousand packets per second is refreshed once per tick
    /// and its other packets only read the table. The lists stay exactly
    /// ordered by stored `last_seen`, so what is evicted is the least
    /// recently seen flow to within one tick, and timeouts gain one tick of
    /// slack so that nothing expires early (it may expire up to a tick
    /// late). Shift 0 is the exact table. Shifts above 40 are clamped.
    pub fn with_refresh(
        capacity: usize,
        max_versions: usize,
        timeouts: FlowTimeouts,
        refresh_shift: u32,
    ) -> Self {
        let refresh_shift = refresh_shift.min(40);
        let capacity = capacity.min(MAX_CAPACITY);
        let mut nodes = allocator_api2::vec::Vec::with_capacity_in(capacity, HugePages);
        nodes.resize(capacity, Node::FREE);
        let mut nodes = nodes.into_boxed_slice();
        // Free list in index order: node i links to i + 1; the last to NIL.
        for (node, next) in nodes.iter_mut().zip(1u32..) {
            node.next = next;
        }
        if let Some(last) = nodes.last_mut() {
            last.next = NIL;
        }
        let empty = List {
            head: NIL,
            tail: NIL,
        };
        let mut timeout = [0; 3];
        timeout[Class::Tcp as usize] = timeouts.tcp_idle_ns;
        timeout[Class::Closing as usize] = timeouts.tcp_closing_ns;
        timeout[Class::Other as usize] = timeouts.udp_idle_ns;
        FlowTable {
            index: HashTable::with_capacity_in(capacity.saturating_mul(2), HugePages),
            hasher: IndexHasher::random(),
            free: if capacity == 0 { NIL } else { 0 },
            nodes,
            lists: [empty; 3],
            refresh_shift,
            expiry: timeout.map(|t| t.saturating_add((1u64 << refresh_shift) - 1)),
            len: 0,
            clock: 0,
            clock_tick: 0,
            evictions: 0,
            changes: 0,
            counts: vec![0; max_versions].into_boxed_slice(),
            slots: vec![SlotBinding::default(); max_versions].into_boxed_slice(),
        }
    }

    /// Entries stored, including expired and stale ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.nodes.len()
    }

    /// Live flows pushed out because the table was full (expired entries
    /// reclaimed to make room are not counted).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Records that the published snapshot puts version `uid` in `slot`.
    /// When the uid changes, the slot's count restarts at 0 and the slot's
    /// old entries become stale: absent for lookups, and never decrementing
    /// the new version's count. An out-of-range slot is ignored.
    pub fn bind_version(&mut self, slot: u32, uid: u64) {
        let s = slot as usize;
        let (Some(bound), Some(count)) = (self.slots.get_mut(s), self.counts.get_mut(s)) else {
            return;
        };
        if bound.uid != uid {
            bound.uid = uid;
            bound.gen = bound.gen.wrapping_add(1);
            *count = 0;
        }
    }

    /// Open entries of the version currently bound to `slot` (0 when out of
    /// range): flows whose client has not sent a FIN or RST. A closing flow
    /// is no longer an in-progress connection for the drain rule (its late
    /// packets still count through the rule's quiet period). Expired
    /// entries count until they are reclaimed; since the table evicts, 0
    /// alone does not prove a version drained.
    pub fn active_flows(&self, slot: u32) -> u32 {
        self.counts.get(slot as usize).copied().unwrap_or(0)
    }

    /// The flow's entry, refreshed to `now` and moved to the head of its
    /// list; one index probe on a hit. `flags` advance the TCP state (see
    /// `FlowState`).
    ///
    /// Misses (`None`) when the flow is unknown, has been idle longer than
    /// its timeout, belongs to a version no longer bound to its slot, or is
    /// a `Closing` TCP flow whose 5-tuple a SYN reuses; the entry is removed
    /// in the last three cases and the caller selects a backend afresh.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now: u64, flags: TcpFlags) -> Option<FlowEntry> {
        self.lookup_located(key, Located::NOWHERE, now, flags)
    }

    /// Where `key`'s entry probably is, read without changing anything: the
    /// first half of a lookup, for a caller that locates a whole burst's
    /// flows before it looks any of them up (see
    /// [`FlowTable::lookup_located`]).
    ///
    /// The node is the first of the index whose 7-bit tag matches the
    /// key's hash, and its line is prefetched; its key is not compared
    /// here. Reading it would wait for that line, and a plain load keeps
    /// its place in the core's reorder window until the line comes, which
    /// lets only a few packets' probes overlap; comparing it in
    /// `lookup_located`, a pass later, finds it in cache. "Nowhere" means
    /// no tag matched: the key is not in the table.
    #[inline]
    pub fn locate(&self, key: &FlowKey) -> Located {
        let nodes = &self.nodes;
        let first = self.index.find(self.index_hash(key), |&i| {
            if let Some(n) = nodes.get(i as usize) {
                prefetch(n);
            }
            true
        });
        Located {
            node: first.copied().unwrap_or(NIL),
            changes: self.changes,
        }
    }

    /// The backend in the node that `at` names, as it is: the node may hold
    /// another flow, or none. Only for prefetching that backend's path
    /// before the lookup; `lookup_located` gives the flow's real entry.
    #[inline]
    pub fn located_backend(&self, at: Located) -> Option<u16> {
        self.nodes.get(at.node as usize).map(|n| n.backend)
    }

    /// [`FlowTable::lookup`], starting from where [`FlowTable::locate`]
    /// found a candidate earlier. The node is used if it is in use and
    /// holds `key`, which makes it the key's entry, as a key has one. "No
    /// candidate" stands when no entry was added or removed since. In
    /// every other case (another flow's tag matched first, an entry was
    /// added, the node was freed or reused) the index is probed again.
    ///
    /// Why: in a loop that looks up one flow after another, each lookup
    /// waits for its index group, its index slot and its node to come from
    /// memory in turn, and with thousands of flows none of them is in L1.
    /// Locating every flow of a burst first issues those reads back to back,
    /// so that they overlap, and the lookups then find them in cache.
    #[inline]
    pub fn lookup_located(
        &mut self,
        key: &FlowKey,
        at: Located,
        now: u64,
        flags: TcpFlags,
    ) -> Option<FlowEntry> {
        let now = self.tick(now);
        let idx = match self.nodes.get(at.node as usize) {
            Some(n) if n.protocol != FREE_PROTOCOL && n.matches(key) => at.node,
            None if at.changes == self.changes => return None,
            _ => self.find(self.index_hash(key), key)?,
        };
        let i = idx as usize;
        let node = self.nodes.get(i)?;
        // The common hit first: a live entry refreshed within this tick,
        // and flags that can neither close it nor reopen it (no SYN, FIN
        // or RST). Such an entry cannot have expired (it is at most
        // `2^refresh_shift - 1` old, which every expiry exceeds), so the general
        // path below would also return it unchanged; this one reads one
        // node and one slot binding and writes nothing.
        if !flags.has(TcpFlags::SYN.union(TcpFlags::FIN).union(TcpFlags::RST))
            && self.clock_tick == (node.last_seen >> self.refresh_shift)
        {
            if let Some(b) = self.slots.get(node.slot as usize) {
                if b.gen == node.gen {
                    return Some(FlowEntry {
                        version: VersionRef {
                            slot: node.slot,
                            uid: b.uid,
                        },
                        backend: node.backend,
                        state: node.state,
                        last_seen: node.last_seen,
                    });
                }
            }
        }
        let class = node.class();
        let reused = class == Class::Closing && flags.opens();
        if self.is_stale(node) || self.is_expired(node, now) || reused {
            self.remove_node(idx);
            return None;
        }
        let closes = class == Class::Tcp && flags.closes();
        let fresh = (now >> self.refresh_shift) == (node.last_seen >> self.refresh_shift);
        if fresh && !closes {
            // Same tick, same state: nothing to write.
            return Some(self.entry(node));
        }
        let at_head = self.lists[class as usize].head == idx;
        let node = self.nodes.get_mut(i)?;
        node.last_seen = now;
        if closes {
            let was_counted = node.state == FlowState::Open;
            node.state = FlowState::Closing;
            if was_counted {
                if let Some(c) = self.counts.get_mut(node.slot as usize) {
                    *c = c.saturating_sub(1);
                }
            }
        }
        if closes || !at_head {
            self.unlink(idx, class);
            self.push_front(idx);
        }
        Some(self.entry(&self.nodes[i]))
    }

    /// The flow's entry without refreshing it: `None` if unknown, stale or
    /// idle for longer than its timeout at `now`. For tests and debugging.
    pub fn peek(&self, key: &FlowKey, now: u64) -> Option<FlowEntry> {
        let now = now.max(self.clock);
        let idx = self.find(self.index_hash(key), key)?;
        let node = &self.nodes[idx as usize];
        if self.is_stale(node) || self.is_expired(node, now) {
            return None;
        }
        Some(self.entry(node))
    }

    /// Pins `key` to `backend` of `version`, as seen at `now` with `flags`
    /// (a first packet that carries FIN or RST starts `Closing`). Replaces
    /// an existing entry for the key.
    ///
    /// When the table is full, the oldest expired entry makes room if there
    /// is one, otherwise the least recently seen entry is evicted. Binds
    /// `version.uid` to its slot if it is not bound yet: the caller's
    /// snapshot is the authority. A slot `>= max_versions` is a control
    /// plane bug; such a flow is not pinned (it keeps its Maglev backend
    /// while the version's health is unchanged).
    pub fn insert(
        &mut self,
        key: FlowKey,
        version: VersionRef,
        backend: u16,
        now: u64,
        flags: TcpFlags,
    ) {
        let slot = version.slot as usize;
        if slot >= self.counts.len() {
            return;
        }
        self.bind_version(version.slot, version.uid);
        let now = self.tick(now);
        let hash = self.index_hash(&key);
        let idx = match self.find(hash, &key) {
            Some(idx) => {
                let class = self.nodes[idx as usize].class();
                self.unlink(idx, class);
                self.uncount(idx);
                idx
            }
            None => {
                if self.free == NIL {
                    self.make_room(now);
                }
                let Some(idx) = self.pop_free() else {
                    return; // capacity 0
                };
                let (nodes, hasher) = (&self.nodes, &self.hasher);
                self.index.insert_unique(hash, idx, |&i| {
                    nodes.get(i as usize).map_or(0, |n| hasher.hash(&n.key()))
                });
                self.changes = self.changes.wrapping_add(1);
                self.len = self.len.saturating_add(1);
                idx
            }
        };
        let gen = self.slots[slot].gen;
        let node = &mut self.nodes[idx as usize];
        *node = Node {
            src: key.src,
            dst: key.dst,
            last_seen: now,
            slot: version.slot,
            gen,
            prev: NIL,
            next: NIL,
            src_port: key.src_port,
            dst_port: key.dst_port,
            backend,
            protocol: key.protocol,
            state: initial_state(key.protocol, flags),
        };
        let open = self.nodes[idx as usize].state == FlowState::Open;
        self.push_front(idx);
        if open {
            if let Some(c) = self.counts.get_mut(slot) {
                *c = c.saturating_add(1);
            }
        }
    }

    /// Removes the flow's entry and returns it, whatever its idle time
    /// (there is no `now` here); `None` if there was none or it was stale.
    pub fn remove(&mut self, key: &FlowKey) -> Option<FlowEntry> {
        let idx = self.find(self.index_hash(key), key)?;
        let node = &self.nodes[idx as usize];
        let entry = (!self.is_stale(node)).then(|| self.entry(node));
        self.remove_node(idx);
        entry
    }

    /// Removes up to `budget` entries that are idle for longer than their
    /// timeout at `now`, oldest first, and returns how many. Only list
    /// tails are examined, so the cost is O(removed); the worker calls it
    /// once per burst with a small budget.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let now = self.tick(now);
        let mut removed = 0;
        while removed < budget {
            let Some(idx) = self.oldest_expired(now) else {
                break;
            };
            self.remove_node(idx);
            removed += 1;
        }
        removed
    }

    /// Advances the clock to `now` unless it is behind; returns the clock.
    /// A branch rather than a `max`: a burst's packets share one `now`, so
    /// all but the first leave the clock as it is.
    #[inline]
    fn tick(&mut self, now: u64) -> u64 {
        if now > self.clock {
            self.clock = now;
            self.clock_tick = now >> self.refresh_shift;
        }
        self.clock
    }

    #[inline]
    fn index_hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash(key)
    }

    /// The node of `key`, whose index hash is `hash`: one probe.
    #[inline]
    fn find(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        let nodes = &self.nodes;
        self.index
            .find(hash, |&i| {
                nodes.get(i as usize).is_some_and(|n| n.matches(key))
            })
            .copied()
    }

    fn is_stale(&self, node: &Node) -> bool {
        self.slots.get(node.slot as usize).map(|b| b.gen) != Some(node.gen)
    }

    fn is_expired(&self, node: &Node, now: u64) -> bool {
        now.saturating_sub(node.last_seen) > self.expiry[node.class() as usize]
    }

    fn entry(&self, node: &Node) -> FlowEntry {
        FlowEntry {
            version: VersionRef {
                slot: node.slot,
                uid: self.slots.get(node.slot as usize).map_or(0, |b| b.uid),
            },
            backend: node.backend,
            state: node.state,
            last_seen: node.last_seen,
        }
    }
}

#[cfg(test)]
mod tests;
