//! DPDK driver (cargo feature `dpdk`): poll-mode ports on Debian's DPDK
//! 22.11 through our own thin FFI.
//!
//! [`Eal::init`] starts DPDK's environment once per process with the EAL
//! arguments of `[dataplane.dpdk]`. [`DpdkPort::open`] gives a worker one
//! RX/TX queue pair of an ethdev: the first open of a device configures
//! all of its queues (RSS across them when there are several and the
//! device hashes), one mempool per queue, and starts it; the port is
//! stopped again when its last queue is dropped. Received mbufs go to the
//! pipeline as [`Mbuf`]s without a copy and leave through `tx_burst` with
//! none either: one `rte_eth_rx_burst`/`rte_eth_tx_burst` per burst, no
//! allocation and no system call per packet (the PMD's own, such as
//! net_af_packet's kick, aside).
//!
//! bindgen binds `src/io/dpdk_shim.h`; the C shim wraps DPDK's inline
//! functions. All `unsafe` of the driver is in this module and its
//! submodules (`device`: the device table, `mbuf`: the frames).
#![allow(unsafe_code)]

mod device;
mod mbuf;
mod sys;

use std::ffi::{c_char, c_int, CString};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::io::Port;

use device::{
    check_options, create_pools, lock_devices, port_id, restore_thread_affinity, rte_errno,
    strerror, thread_affinity, Device,
};
pub use mbuf::Mbuf;

/// Why the EAL or a port could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// `Eal::init` was called before in this process (DPDK allows one).
    #[error("the DPDK EAL is already initialised in this process")]
    AlreadyInitialized,
    /// An EAL argument holds a NUL byte.
    #[error("EAL argument {0:?} holds a NUL byte")]
    BadArgument(String),
    /// `rte_eal_init` failed.
    #[error("rte_eal_init({args}): {msg} (rte_errno {errno})")]
    EalInit {
        /// The arguments, space separated.
        args: String,
        /// rte_errno.
        errno: i32,
        /// rte_strerror of it.
        msg: String,
    },
    /// No ethdev has this name or id.
    #[error(
        "no DPDK port {0:?} (ports are named by their vdev/PCI name, e.g. net_ring0, or numbered)"
    )]
    NoSuchPort(String),
    /// Attaching a device with `rte_dev_probe` failed.
    #[error("rte_dev_probe({devargs:?}): {msg} ({errno})")]
    Probe {
        /// The device arguments.
        devargs: String,
        /// The negative errno.
        errno: i32,
        /// Its description.
        msg: String,
    },
    /// The options break a rule of the driver.
    #[error("invalid DPDK options: {0}")]
    InvalidOptions(String),
    /// The device is already configured with other options.
    #[error("DPDK port {port} is already configured with {configured:?}, asked for {asked:?}")]
    Reconfigure {
        /// The port id.
        port: u16,
        /// The options it runs with.
        configured: Box<DpdkOptions>,
        /// The options asked for.
        asked: Box<DpdkOptions>,
    },
    /// The queue is in use by another `DpdkPort`.
    #[error("DPDK port {port} queue {queue} is already open")]
    QueueInUse {
        /// The port id.
        port: u16,
        /// The queue.
        queue: u16,
    },
    /// Creating a queue's mempool failed.
    #[error("rte_pktmbuf_pool_create({name}): {msg} (rte_errno {errno})")]
    Mempool {
        /// The pool's name.
        name: String,
        /// rte_errno.
        errno: i32,
        /// Its description.
        msg: String,
    },
    /// A step of the port's configuration failed.
    #[error("DPDK port {port}: {step}: {msg} ({errno})")]
    Setup {
        /// The port id.
        port: u16,
        /// The DPDK call that failed.
        step: String,
        /// The negative errno it returned.
        errno: i32,
        /// Its description.
        msg: String,
    },
}

/// How a device's queues are set up; the same for every queue of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkOptions {
    /// RX/TX queue pairs of the device: one per worker (default 1). With
    /// more than one, RSS over IP addresses and TCP/UDP ports spreads the
    /// flows when the device supports it (a symmetric key, so both
    /// directions of a flow meet on one worker).
    pub queues: u16,
    /// RX descriptors per queue (default 1024; the PMD may round).
    pub rx_descriptors: u16,
    /// TX descriptors per queue (default 1024; the PMD may round).
    pub tx_descriptors: u16,
    /// Mbufs in each queue's pool: RX descriptors, frames in flight in the
    /// pipeline and TX descriptors (default 8191; 2^n - 1 is the mempool's
    /// best size).
    pub pool_size: u32,
    /// Per-lcore cache of each pool (default 256). It serves lcores only:
    /// EAL threads, and workers, which register as lcores when they start
    /// ([`Port::attach_thread`]).
    pub pool_cache: u32,
    /// Receive every frame on the wire, not only those to the port's MAC
    /// (default off).
    pub promiscuous: bool,
}

impl Default for DpdkOptions {
    fn default() -> Self {
        DpdkOptions {
            queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            pool_size: 8191,
            pool_cache: 256,
            promiscuous: false,
        }
    }
}

/// Proof that DPDK's Environment Abstraction Layer runs in this process.
///
/// DPDK allows one initialisation per process (and no clean restart), so
/// there is no teardown: the EAL lives until the process exits.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

static EAL_STARTED: AtomicBool = AtomicBool::new(false);

impl Eal {
    /// Initialises the EAL with `args` (without the program name), e.g.
    /// `["--no-huge", "-m", "512", "--no-pci", "--no-shconf",
    /// "--vdev=net_ring0"]`. Fails with [`DpdkError::AlreadyInitialized`]
    /// on a second call, even after a failed first one.
    ///
    /// `rte_eal_init` pins the calling thread to the EAL's main lcore; the
    /// thread's CPU affinity is restored afterwards so that threads it
    /// spawns later (the control plane) are not all squeezed onto one core.
    pub fn init(args: &[String]) -> Result<Eal, DpdkError> {
        let mut argv_owned = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once("cutover").chain(args.iter().map(String::as_str)) {
            argv_owned.push(CString::new(a).map_err(|_| DpdkError::BadArgument(a.to_owned()))?);
        }
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyInitialized);
        }
        // The EAL may keep pointers into argv and permutes it: leak it, once.
        let argv: &'static mut [*mut c_char] = Vec::leak(
            argv_owned
                .into_iter()
                .map(CString::into_raw)
                .collect::<Vec<_>>(),
        );
        let argc = c_int::try_from(argv.len())
            .map_err(|_| DpdkError::BadArgument("too many EAL arguments".to_owned()))?;
        let affinity = thread_affinity();
        // SAFETY: argv holds argc valid NUL-terminated strings that live
        // for the rest of the process; the EAL is initialised only once
        // (EAL_STARTED).
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if let Some(set) = affinity {
            restore_thread_affinity(&set);
        }
        if rc < 0 {
            let errno = rte_errno();
            return Err(DpdkError::EalInit {
                args: args.join(" "),
                errno,
                msg: strerror(errno),
            });
        }
        Ok(Eal { _private: () })
    }

    /// Attaches a device after start-up (hotplug), e.g.
    /// `net_af_packet0,iface=eth0`, and returns its port id. A vdev that
    /// opens kernel sockets (net_af_packet) opens them in the calling
    /// thread's network namespace.
    pub fn attach(&self, devargs: &str) -> Result<u16, DpdkError> {
        let c = CString::new(devargs).map_err(|_| DpdkError::BadArgument(devargs.to_owned()))?;
        let _guard = lock_devices();
        // SAFETY: `c` is a valid C string for the call; the EAL runs; the
        // device lock serialises ethdev control calls of this module.
        let rc = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        if rc < 0 {
            return Err(DpdkError::Probe {
                devargs: devargs.to_owned(),
                errno: rc,
                msg: strerror(-rc),
            });
        }
        let name = devargs.split(',').next().unwrap_or(devargs);
        port_id(name)
    }

    /// The id of the port named `device` (`net_ring0`, a PCI address) or
    /// numbered `device`.
    pub fn port_id(&self, device: &str) -> Result<u16, DpdkError> {
        port_id(device)
    }
}

/// A worker's RX/TX queue pair on one DPDK port.
///
/// Owns its queue (no other `DpdkPort` uses it) and the queue's mempool
/// share of the device. Dropping the last queue of a device stops it.
pub struct DpdkPort {
    port: u16,
    queue: u16,
    pool: NonNull<sys::rte_mempool>,
    stats: DpdkStats,
    /// The lcore id of the worker thread, once [`Port::attach_thread`]
    /// registered it.
    lcore: Option<u32>,
}

// SAFETY: the pool pointer is a DPDK mempool, usable from any thread
// (multi-producer/consumer ring); the queue is used by this value alone.
unsafe impl Send for DpdkPort {}

/// Counters of one queue, kept by the worker that owns it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DpdkStats {
    /// Frames received and handed to the pipeline.
    pub rx_packets: u64,
    /// Received chained (multi-segment) frames, dropped: the pipeline
    /// needs a frame in one piece, and RX scatter is not enabled.
    pub rx_multi_segment: u64,
    /// Frames the driver accepted for sending.
    pub tx_packets: u64,
    /// `alloc` found the pool empty.
    pub alloc_failed: u64,
}

/// The device-wide counters of `rte_eth_stats_get`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    /// Frames received by the device.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Frames dropped because the RX queues were full.
    pub imissed: u64,
    /// Erroneous frames received.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort")
            .field("port", &self.port)
            .field("queue", &self.queue)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl DpdkPort {
    /// Opens queue `queue` of the port `device` (its name, e.g. `net_ring0`
    /// or `0000:03:00.0`, or its number). The first open of a device
    /// configures and starts it with `opts`; later opens must pass the same
    /// options (or get [`DpdkError::Reconfigure`]).
    pub fn open(
        _eal: &Eal,
        device: &str,
        queue: u16,
        opts: &DpdkOptions,
    ) -> Result<DpdkPort, DpdkError> {
        check_options(opts)?;
        if queue >= opts.queues {
            return Err(DpdkError::InvalidOptions(format!(
                "queue {queue} out of range: the port has {} queue(s)",
                opts.queues
            )));
        }
        let port = port_id(device)?;
        let mut devices = lock_devices();
        let idx = match devices.iter().position(|d| d.port == port) {
            Some(i) => i,
            None => {
                let pools = create_pools(port, opts)?;
                devices.push(Device {
                    port,
                    opts: opts.clone(),
                    pools,
                    claimed: vec![false; usize::from(opts.queues)],
                    started: false,
                    configured: false,
                });
                devices.len() - 1
            }
        };
        let dev = &mut devices[idx];
        if dev.opts != *opts {
            return Err(DpdkError::Reconfigure {
                port,
                configured: Box::new(dev.opts.clone()),
                asked: Box::new(opts.clone()),
            });
        }
        let q = usize::from(queue);
        if dev.claimed[q] {
            return Err(DpdkError::QueueInUse { port, queue });
        }
        if !dev.started {
            dev.start()?;
        }
        dev.claimed[q] = true;
        Ok(DpdkPort {
            port,
            queue,
            pool: dev.pools[q].0,
            stats: DpdkStats::default(),
            lcore: None,
        })
    }

    /// The DPDK port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The queue this port polls.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// This queue's counters.
    pub fn stats(&self) -> DpdkStats {
        self.stats
    }

    /// The lcore id the worker thread registered as (see
    /// [`Port::attach_thread`]); `None` before, after, or when no lcore
    /// was left.
    pub fn lcore(&self) -> Option<u32> {
        self.lcore
    }

    /// Mbufs of this queue's pool in the calling thread's per-lcore cache
    /// (0 for a thread that is not an lcore).
    pub fn cached_mbufs(&self) -> u32 {
        // SAFETY: the pool is a valid mempool for the life of the process;
        // the call reads the calling lcore's cache of it only.
        unsafe { sys::cutover_mempool_cached(self.pool.as_ptr()) }
    }

    /// The port's MAC address (the source of frames the LB sends).
    pub fn mac_address(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: `addr` is a valid out-parameter; the port id is valid.
        let rc = unsafe { sys::rte_eth_macaddr_get(self.port, &mut addr) };
        self.check(rc, "rte_eth_macaddr_get")?;
        Ok(addr.addr_bytes)
    }

    /// The device's counters (all queues).
    pub fn device_stats(&self) -> Result<DeviceStats, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: `s` is a valid out-parameter; the port id is valid.
        let rc = unsafe { sys::rte_eth_stats_get(self.port, &mut s) };
        self.check(rc, "rte_eth_stats_get")?;
        Ok(DeviceStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    fn check(&self, rc: c_int, step: &str) -> Result<(), DpdkError> {
        if rc == 0 {
            return Ok(());
        }
        Err(DpdkError::Setup {
            port: self.port,
            step: step.to_owned(),
            errno: rc,
            msg: strerror(rc.saturating_neg()),
        })
    }
}

impl Port for DpdkPort {
    type Buf = Mbuf;

    /// One `rte_eth_rx_burst` straight into `out`'s spare capacity (which
    /// the worker keeps at least `max`, so nothing is allocated).
    fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: usize) -> io::Result<usize> {
        let n = u16::try_from(max).unwrap_or(u16::MAX);
        out.reserve(usize::from(n));
        let start = out.len();
        // SAFETY: `out` has room for `n` more elements after `start`; `Mbuf`
        // is a transparent `NonNull<rte_mbuf>`, so the PMD writes mbuf
        // pointers (non-null) straight into it. The queue is ours alone.
        let got = unsafe {
            let dst = out.as_mut_ptr().add(start).cast::<*mut sys::rte_mbuf>();
            let got = sys::cutover_rx_burst(self.port, self.queue, dst, n);
            // The first `got` slots now hold mbufs the PMD handed over: single
            // owner, reference count one.
            out.set_len(start + usize::from(got));
            usize::from(got)
        };
        // Chained frames (a PMD with scatter) do not fit the pipeline.
        let mut i = start;
        while i < out.len() {
            if out[i].segments() == 1 {
                i += 1;
            } else {
                self.stats.rx_multi_segment += 1;
                drop(out.remove(i));
            }
        }
        let kept = out.len() - start;
        self.stats.rx_packets += kept as u64;
        debug_assert!(kept <= got);
        Ok(kept)
    }

    /// One `rte_eth_tx_burst` over `pkts` in place; the mbufs the driver
    /// took leave the front of `pkts`, the rest (TX ring full) stay.
    fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> io::Result<usize> {
        let len = pkts.len();
        let n = u16::try_from(len).unwrap_or(u16::MAX);
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: `pkts` holds `len >= n` valid mbufs; `Mbuf` is a
        // transparent mbuf pointer, so the array is what tx_burst expects.
        // The first `sent` now belong to the driver: they are moved out of
        // the vector without running `Mbuf`'s drop (no double free), and the
        // rest are moved to the front.
        let sent = unsafe {
            let base = pkts.as_mut_ptr();
            let sent =
                usize::from(sys::cutover_tx_burst(self.port, self.queue, base.cast(), n)).min(len);
            std::ptr::copy(base.add(sent), base, len - sent);
            pkts.set_len(len - sent);
            sent
        };
        self.stats.tx_packets += sent as u64;
        Ok(sent)
    }

    fn free(&mut self, buf: Mbuf) {
        drop(buf);
    }

    /// Registers the worker thread as a DPDK lcore (`rte_thread_register`):
    /// a plain thread has no lcore id, and the pool's per-lcore cache
    /// (`pool_cache`) only serves lcores; without it every mbuf alloc and
    /// free goes to the shared ring, with an atomic operation each.
    fn attach_thread(&mut self) {
        if self.lcore.is_some() {
            return;
        }
        // SAFETY: registers the calling thread with the EAL, which is
        // initialised (a port exists).
        let id = unsafe { sys::cutover_thread_register() };
        match u32::try_from(id) {
            Ok(id) => {
                self.lcore = Some(id);
                tracing::info!(
                    port = self.port,
                    queue = self.queue,
                    lcore = id,
                    "worker registered as a DPDK lcore"
                );
            }
            Err(_) => tracing::warn!(
                port = self.port,
                queue = self.queue,
                error = %strerror(rte_errno()),
                "worker not registered as a DPDK lcore; its mbufs bypass the per-lcore cache"
            ),
        }
    }

    /// Returns the thread's cached mbufs to the pool and its lcore to the
    /// EAL.
    fn detach_thread(&mut self) {
        if self.lcore.take().is_some() {
            // SAFETY: the calling thread registered in `attach_thread`; the
            // pool is valid for the life of the process.
            unsafe { sys::cutover_thread_unregister(self.pool.as_ptr()) };
        }
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        // SAFETY: the pool is a valid mbuf pool that outlives the process's
        // ports (pools are never freed).
        let m = unsafe { sys::cutover_pktmbuf_alloc(self.pool.as_ptr()) };
        match NonNull::new(m) {
            // SAFETY: a fresh mbuf from rte_pktmbuf_alloc: one segment,
            // reference count one, headroom reset, length zero, ours.
            Some(m) => Some(unsafe { Mbuf::from_raw(m) }),
            None => {
                self.stats.alloc_failed += 1;
                None
            }
        }
    }
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        let mut devices = lock_devices();
        if let Some(dev) = devices.iter_mut().find(|d| d.port == self.port) {
            if let Some(c) = dev.claimed.get_mut(usize::from(self.queue)) {
                *c = false;
            }
            if dev.claimed.iter().all(|c| !c) {
                dev.stop();
            }
        }
    }
}
