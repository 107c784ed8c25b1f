//! One flow's storage in the flow table's slab.

use super::entry::{Class, FlowState, TCP};
use super::{FlowKey, NIL};

/// The `protocol` of a node on the free list. A live entry may have
/// protocol 0 too (the pipeline never stores one): `lookup_located` then
/// ignores where it was located and probes the index.
pub(super) const FREE_PROTOCOL: u8 = 0;

/// One flow's storage: the key (flattened, so no padding), the entry, and
/// the links of its LRU list (or of the free list). Exactly one cache line.
#[derive(Clone, Copy)]
#[repr(align(64))]
pub(super) struct Node {
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) last_seen: u64,
    pub(super) slot: u32,
    /// `FlowTable::slots[slot].gen` when the entry was written. Stands in for
    /// the version's 64-bit uid to keep the node in one line: the entry is
    /// stale once its slot is bound to another uid, which bumps the
    /// generation. Telling a stale entry from a live one would need 2^32
    /// rebinds of one slot within the entry's idle timeout.
    pub(super) gen: u32,
    pub(super) prev: u32,
    pub(super) next: u32,
    pub(super) src_port: u16,
    pub(super) dst_port: u16,
    pub(super) backend: u16,
    pub(super) protocol: u8,
    pub(super) state: FlowState,
}

const _: () = assert!(core::mem::size_of::<Node>() == 64);

impl Node {
    pub(super) const FREE: Node = Node {
        src: [0; 16],
        dst: [0; 16],
        last_seen: 0,
        slot: 0,
        gen: 0,
        prev: NIL,
        next: NIL,
        src_port: 0,
        dst_port: 0,
        backend: 0,
        protocol: 0,
        state: FlowState::Open,
    };

    #[inline]
    pub(super) fn matches(&self, key: &FlowKey) -> bool {
        self.src == key.src
            && self.dst == key.dst
            && self.src_port == key.src_port
            && self.dst_port == key.dst_port
            && self.protocol == key.protocol
    }

    pub(super) fn key(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: self.protocol,
        }
    }

    #[inline]
    pub(super) fn class(&self) -> Class {
        if self.protocol != TCP {
            Class::Other
        } else if self.state == FlowState::Closing {
            Class::Closing
        } else {
            Class::Tcp
        }
    }
}
