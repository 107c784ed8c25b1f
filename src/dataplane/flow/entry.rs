//! What the flow table keeps and answers about a flow: its version, where
//! it is in its life, the TCP flags that move it on, and the idle timeouts
//! of its class.

/// IP protocol number of TCP: only TCP flows follow FIN/RST/SYN.
pub(super) const TCP: u8 = 6;

/// The version a flow belongs to.
///
/// `slot` is a dense index below the table's `max_versions` that the control
/// plane gives a live version; `uid` is unique forever. A slot is reused by
/// later versions, so an entry whose uid differs from its slot's current
/// uid is stale: the table treats it as absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VersionRef {
    pub slot: u32,
    pub uid: u64,
}

/// Where a flow is in its life, as far as one direction of it shows (with
/// direct server return only client→server packets pass through).
///
/// * `Open`: every non-TCP flow, and a TCP flow first seen with its SYN,
///   before any FIN or RST. Times out after `tcp_idle_ns` (TCP) or
///   `udp_idle_ns` (anything else). Counted as an active flow.
/// * `Joined`: a TCP flow first seen mid-connection (after an eviction, a
///   restart, or a last ACK that outlived its entry). Forwarded like `Open`
///   with its timeout, but not counted: nothing proves it is a live
///   connection, and a dead one must not hold its version's drain for the
///   whole idle timeout. A live one keeps its version through the drain
///   rule's quiet period (its packets), which is what that rule is for.
/// * `Closing`: the client sent a FIN or a RST. Times out after the short
///   `tcp_closing_ns`. A SYN without ACK on a `Closing` entry means the
///   client reuses the 5-tuple for a new connection: `lookup` drops the
///   entry and misses, so the pipeline selects a backend afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowState {
    Open = 0,
    Closing = 1,
    Joined = 2,
}

/// The state of a new entry for a flow whose first packet seen here has
/// `flags`.
pub(super) fn initial_state(protocol: u8, flags: TcpFlags) -> FlowState {
    if protocol != TCP {
        FlowState::Open
    } else if flags.closes() {
        FlowState::Closing
    } else if flags.has(TcpFlags::SYN) {
        FlowState::Open
    } else {
        FlowState::Joined
    }
}

/// TCP flags of the packet being looked up or inserted, as the flags byte
/// of the TCP header (byte 13), so the pipeline passes it through. Ignored
/// for non-TCP flows; pass `TcpFlags::NONE` there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const NONE: TcpFlags = TcpFlags(0);
    pub const FIN: TcpFlags = TcpFlags(0x01);
    pub const SYN: TcpFlags = TcpFlags(0x02);
    pub const RST: TcpFlags = TcpFlags(0x04);
    pub const ACK: TcpFlags = TcpFlags(0x10);

    pub const fn union(self, other: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | other.0)
    }

    pub(super) const fn has(self, flag: TcpFlags) -> bool {
        self.0 & flag.0 != 0
    }

    /// FIN or RST: the connection is ending.
    pub(super) const fn closes(self) -> bool {
        self.has(TcpFlags::FIN) || self.has(TcpFlags::RST)
    }

    /// SYN without ACK: a client opening a connection.
    pub(super) const fn opens(self) -> bool {
        self.has(TcpFlags::SYN) && !self.has(TcpFlags::ACK)
    }
}

/// What the table knows about a flow, returned by value (32 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    pub version: VersionRef,
    /// Index into the version's backend list, as `MaglevTable::lookup`
    /// returns it.
    pub backend: u16,
    pub state: FlowState,
    /// `now` of the last packet, in the caller's nanoseconds.
    pub last_seen: u64,
}

/// Idle timeouts per class, in nanoseconds. An entry idle for longer than
/// its class's timeout is absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTimeouts {
    /// Open TCP flows.
    pub tcp_idle_ns: u64,
    /// Everything that is not TCP (UDP, ICMP, ...).
    pub udp_idle_ns: u64,
    /// TCP after the client's FIN or a RST: short, the connection is over
    /// and its 5-tuple may come back as a new connection.
    pub tcp_closing_ns: u64,
}

impl Default for FlowTimeouts {
    /// The configuration's defaults: 300 s TCP, 30 s UDP, 10 s closing.
    fn default() -> Self {
        const S: u64 = 1_000_000_000;
        FlowTimeouts {
            tcp_idle_ns: 300 * S,
            udp_idle_ns: 30 * S,
            tcp_closing_ns: 10 * S,
        }
    }
}

/// Timeout classes, one LRU list each. All entries of a list share one
/// timeout, so a list ordered by last packet is also ordered by expiry and
/// its tail is both its oldest and its first to expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Tcp = 0,
    Closing = 1,
    Other = 2,
}

pub(super) const CLASSES: [Class; 3] = [Class::Tcp, Class::Closing, Class::Other];
