//! The XDP program of an interface and its VIP map: [`VipFilter`].
//!
//! One program instance serves every AF_XDP port of one interface (in one
//! network namespace): it is attached when the first port opens and
//! detached when the last holder of the filter lets go. Its two maps are
//! the meeting point of the control plane and the kernel's fast path:
//! `vips` says which destinations are the data plane's (written by
//! [`VipFilter::set_vips`]), `xsks` says which socket serves which RX queue
//! (written when a port opens; the kernel drops the entry when the socket
//! closes).

use std::collections::HashSet;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use aya::maps::{HashMap as BpfHashMap, MapData, XskMap};
use aya::programs::{Xdp, XdpFlags};
use aya::Ebpf;

use super::{AfXdpError, XdpMode};

/// The program object compiled by build.rs (empty when clang was missing).
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_vip.o"));
/// Why build.rs could not compile the program; empty when it did.
const BUILD_ERROR: &str = env!("CUTOVER_XDP_BUILD_ERROR");

/// The program's sections and maps, as named in `bpf/xdp_vip.c`.
const PROG_NAME: &str = "xdp_vip";
const XSK_MAP: &str = "xsks";
const VIP_MAP: &str = "vips";
/// `MAX_QUEUES` in `bpf/xdp_vip.c`.
pub(crate) const MAX_QUEUES: u32 = 256;
/// `MAX_VIPS` in `bpf/xdp_vip.c`.
pub const MAX_VIPS: usize = 65536;

/// The XDP program attached to one interface, and its VIP set.
///
/// Shared (`Arc`) by every [`AfXdpPort`](super::AfXdpPort) of the
/// interface and by the control plane; the program is detached when the
/// last `Arc` is dropped. Updates take a mutex: they come from the control
/// plane, never from a worker's fast path.
pub struct VipFilter {
    ifname: String,
    ifindex: u32,
    native: bool,
    state: Mutex<Loaded>,
}

struct Loaded {
    // Maps first: they only hold fds, and the program must outlive nothing.
    xsks: XskMap<MapData>,
    vips: BpfHashMap<MapData, [u8; 16], u8>,
    current: HashSet<[u8; 16]>,
    // Dropping the Ebpf object detaches the program (its link is owned by
    // the program and released with it).
    _ebpf: Ebpf,
}

impl std::fmt::Debug for VipFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VipFilter")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("native", &self.native)
            .finish_non_exhaustive()
    }
}

/// Identifies "this interface in this network namespace": ifindexes repeat
/// across namespaces, so the namespace's inode is part of the key.
type IfKey = (u64, u64, u32);

/// Live filters, so that every port of an interface shares one program.
static REGISTRY: Mutex<Vec<(IfKey, Weak<VipFilter>)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the maps consistent (each
    // update is one syscall), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn netns_id() -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

/// The 16-byte key of `ip` in the `vips` map: IPv4 as IPv4-mapped IPv6.
pub(crate) fn vip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn program_error(
    ifname: &str,
    op: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> AfXdpError {
    let ifname = ifname.to_owned();
    move |source| AfXdpError::Program { ifname, op, source }
}

impl VipFilter {
    /// The filter of interface `ifname` in the calling thread's network
    /// namespace: the one already attached by this process if any,
    /// otherwise a new program attached in `mode`. The VIP set of a new
    /// filter is empty: no frame reaches a socket until
    /// [`set_vips`](Self::set_vips).
    pub fn for_interface(ifname: &str, mode: XdpMode) -> Result<Arc<VipFilter>, AfXdpError> {
        let ifindex = crate::io::af_packet::interface_index(ifname).map_err(|source| {
            AfXdpError::Interface {
                ifname: ifname.to_owned(),
                source,
            }
        })?;
        let (dev, ino) = netns_id().map_err(|source| AfXdpError::Interface {
            ifname: ifname.to_owned(),
            source,
        })?;
        let key = (dev, ino, ifindex);
        let mut reg = lock(&REGISTRY);
        reg.retain(|(_, w)| w.strong_count() > 0);
        if let Some(f) = reg
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(f);
        }
        let filter = Arc::new(VipFilter::attach(ifname, ifindex, mode)?);
        reg.push((key, Arc::downgrade(&filter)));
        Ok(filter)
    }

    fn attach(ifname: &str, ifindex: u32, mode: XdpMode) -> Result<VipFilter, AfXdpError> {
        if !BUILD_ERROR.is_empty() || PROGRAM.is_empty() {
            return Err(AfXdpError::Unavailable(if BUILD_ERROR.is_empty() {
                "the XDP program was not built".to_owned()
            } else {
                BUILD_ERROR.to_owned()
            }));
        }
        let mut ebpf =
            Ebpf::load(PROGRAM).map_err(|e| program_error(ifname, "load object")(e.into()))?;
        let xdp: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| program_error(ifname, "find program")("no xdp_vip section".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| {
                program_error(ifname, "find program")(e.into())
            })?;
        xdp.load()
            .map_err(|e| program_error(ifname, "load program")(e.into()))?;
        let native = match mode {
            XdpMode::Native => {
                xdp.attach_to_if_index(ifindex, XdpFlags::DRV_MODE)
                    .map_err(|e| program_error(ifname, "attach (native)")(e.into()))?;
                true
            }
            XdpMode::Generic => {
                xdp.attach_to_if_index(ifindex, XdpFlags::SKB_MODE)
                    .map_err(|e| program_error(ifname, "attach (generic)")(e.into()))?;
                false
            }
            XdpMode::Auto => match xdp.attach_to_if_index(ifindex, XdpFlags::DRV_MODE) {
                Ok(_) => true,
                Err(native_err) => {
                    tracing::warn!(ifname, error = %native_err, "native XDP refused, using generic (skb) mode");
                    xdp.attach_to_if_index(ifindex, XdpFlags::SKB_MODE)
                        .map_err(|e| program_error(ifname, "attach (generic)")(e.into()))?;
                    false
                }
            },
        };
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| program_error(ifname, "find map")(format!("no map {name}").into()))
        };
        let xsks = XskMap::try_from(take(&mut ebpf, XSK_MAP)?)
            .map_err(|e| program_error(ifname, "open xsks map")(e.into()))?;
        let vips = BpfHashMap::try_from(take(&mut ebpf, VIP_MAP)?)
            .map_err(|e| program_error(ifname, "open vips map")(e.into()))?;
        tracing::info!(ifname, ifindex, native, "XDP VIP filter attached");
        Ok(VipFilter {
            ifname: ifname.to_owned(),
            ifindex,
            native,
            state: Mutex::new(Loaded {
                xsks,
                vips,
                current: HashSet::new(),
                _ebpf: ebpf,
            }),
        })
    }

    /// Makes `vips` the set of destinations redirected to the data plane;
    /// every other frame goes to the kernel. Addresses added are inserted
    /// before those withdrawn are removed, so a VIP in both the old and the
    /// new set is never missing in between. On an error the map holds a
    /// mix of the two sets; calling again with the same set repairs it.
    pub fn set_vips(&self, vips: &[IpAddr]) -> Result<(), AfXdpError> {
        let want: HashSet<[u8; 16]> = vips.iter().map(|ip| vip_key(*ip)).collect();
        if want.len() > MAX_VIPS {
            return Err(AfXdpError::InvalidOptions(format!(
                "{} VIPs, the XDP map holds at most {MAX_VIPS}",
                want.len()
            )));
        }
        let mut st = lock(&self.state);
        let st = &mut *st;
        for key in want.difference(&st.current.clone()) {
            st.vips
                .insert(key, 1, 0)
                .map_err(|e| program_error(&self.ifname, "insert VIP")(e.into()))?;
            st.current.insert(*key);
        }
        let gone: Vec<[u8; 16]> = st.current.difference(&want).copied().collect();
        for key in gone {
            match st.vips.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(program_error(&self.ifname, "remove VIP")(e.into())),
            }
            st.current.remove(&key);
        }
        Ok(())
    }

    /// The VIPs currently redirected, in no particular order.
    pub fn vips(&self) -> Vec<IpAddr> {
        lock(&self.state)
            .current
            .iter()
            .map(|k| {
                let v6 = std::net::Ipv6Addr::from(*k);
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
            })
            .collect()
    }

    /// The interface the program is attached to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// True when the program runs in the driver (native XDP), false in
    /// generic (skb) mode.
    pub fn native(&self) -> bool {
        self.native
    }

    /// Points the program's queue `queue` at socket `fd`.
    pub(crate) fn register(&self, queue: u32, fd: BorrowedFd<'_>) -> Result<(), AfXdpError> {
        if queue >= MAX_QUEUES {
            return Err(AfXdpError::InvalidOptions(format!(
                "queue {queue}: the XDP program serves queues below {MAX_QUEUES}"
            )));
        }
        lock(&self.state)
            .xsks
            .set(queue, fd, 0)
            .map_err(|e| program_error(&self.ifname, "register socket")(e.into()))
    }
}

impl Drop for VipFilter {
    fn drop(&mut self) {
        tracing::info!(ifname = %self.ifname, "XDP VIP filter detached");
    }
}
