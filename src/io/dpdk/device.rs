//! The process's table of configured DPDK devices, shared by their
//! queues' ports, and the EAL helpers behind it.

use std::ffi::{c_char, c_int, CStr, CString};
use std::io;
use std::ptr::NonNull;
use std::sync::Mutex;

use super::{mbuf, sys, DpdkError, DpdkOptions};

/// A mempool pointer kept in the device table.
pub(super) struct PoolPtr(pub(super) NonNull<sys::rte_mempool>);

// SAFETY: DPDK mempools are thread-safe (multi-producer/consumer rings).
unsafe impl Send for PoolPtr {}

/// A configured device: its options, queue pools and which queues are open.
pub(super) struct Device {
    pub(super) port: u16,
    pub(super) opts: DpdkOptions,
    pub(super) pools: Vec<PoolPtr>,
    pub(super) claimed: Vec<bool>,
    pub(super) started: bool,
    pub(super) configured: bool,
}

impl Device {
    /// Configures (first time) and starts the device.
    pub(super) fn start(&mut self) -> Result<(), DpdkError> {
        let mut step: *const c_char = std::ptr::null();
        let rc = if self.configured {
            step = c"rte_eth_dev_start".as_ptr();
            // SAFETY: the port is configured and stopped; the device lock is held.
            unsafe { sys::rte_eth_dev_start(self.port) }
        } else {
            let pools: Vec<*mut sys::rte_mempool> =
                self.pools.iter().map(|p| p.0.as_ptr()).collect();
            // SAFETY: `pools` holds one valid mbuf pool per queue; `step`
            // receives a static string; the device lock is held.
            unsafe {
                sys::cutover_port_setup(
                    self.port,
                    self.opts.queues,
                    self.opts.rx_descriptors,
                    self.opts.tx_descriptors,
                    pools.as_ptr(),
                    c_int::from(self.opts.promiscuous),
                    &mut step,
                )
            }
        };
        if rc != 0 {
            let step = if step.is_null() {
                "setup".to_owned()
            } else {
                // SAFETY: the shim sets `step` to a static C string literal.
                unsafe { CStr::from_ptr(step) }
                    .to_string_lossy()
                    .into_owned()
            };
            return Err(DpdkError::Setup {
                port: self.port,
                step,
                errno: rc,
                msg: strerror(rc.saturating_neg()),
            });
        }
        self.configured = true;
        self.started = true;
        Ok(())
    }

    pub(super) fn stop(&mut self) {
        if self.started {
            // SAFETY: the port is valid and started; no queue is polled (all
            // its DpdkPorts are gone); the device lock is held.
            let rc = unsafe { sys::rte_eth_dev_stop(self.port) };
            if rc != 0 {
                tracing::warn!(port = self.port, rc, "rte_eth_dev_stop failed");
            }
            self.started = false;
        }
    }
}

static DEVICES: Mutex<Vec<Device>> = Mutex::new(Vec::new());

pub(super) fn lock_devices() -> std::sync::MutexGuard<'static, Vec<Device>> {
    // A panic while holding the lock leaves the table consistent enough.
    DEVICES.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn check_options(o: &DpdkOptions) -> Result<(), DpdkError> {
    let bad = |m: &str| Err(DpdkError::InvalidOptions(m.to_owned()));
    if o.queues == 0 {
        return bad("queues must be positive");
    }
    if o.rx_descriptors == 0 || o.tx_descriptors == 0 {
        return bad("descriptor counts must be positive");
    }
    let need = u32::from(o.rx_descriptors) + u32::from(o.tx_descriptors);
    if o.pool_size <= need {
        return bad("pool_size must exceed rx_descriptors + tx_descriptors");
    }
    if o.pool_cache > 512 || o.pool_cache > o.pool_size / 2 {
        return bad("pool_cache must be at most 512 and half the pool");
    }
    Ok(())
}

/// One mbuf pool per queue, on the device's NUMA node.
pub(super) fn create_pools(port: u16, o: &DpdkOptions) -> Result<Vec<PoolPtr>, DpdkError> {
    // Data room: the headroom plus a 2048-byte frame (RTE_MBUF_DEFAULT_BUF_SIZE).
    let data_room = mbuf::headroom_default().saturating_add(2048);
    // SAFETY: a plain query of a port id that port_id() validated.
    let socket = unsafe { sys::rte_eth_dev_socket_id(port) };
    let socket = if socket < 0 {
        // SAFETY: a plain query of the calling thread's NUMA socket.
        let own = unsafe { sys::rte_socket_id() };
        c_int::try_from(own).unwrap_or(0)
    } else {
        socket
    };
    let mut pools = Vec::with_capacity(usize::from(o.queues));
    for q in 0..o.queues {
        let name = format!("cutover_p{port}_q{q}");
        let c = CString::new(name.clone()).map_err(|_| DpdkError::BadArgument(name.clone()))?;
        // SAFETY: `c` is a valid C string; sizes were checked.
        let p = unsafe {
            sys::rte_pktmbuf_pool_create(
                c.as_ptr(),
                o.pool_size,
                o.pool_cache,
                0,
                data_room,
                socket,
            )
        };
        match NonNull::new(p) {
            Some(p) => pools.push(PoolPtr(p)),
            None => {
                let errno = rte_errno();
                return Err(DpdkError::Mempool {
                    name,
                    errno,
                    msg: strerror(errno),
                });
            }
        }
    }
    Ok(pools)
}

pub(super) fn port_id(device: &str) -> Result<u16, DpdkError> {
    if let Ok(id) = device.parse::<u16>() {
        // SAFETY: a plain query.
        if unsafe { sys::rte_eth_dev_is_valid_port(id) } == 1 {
            return Ok(id);
        }
        return Err(DpdkError::NoSuchPort(device.to_owned()));
    }
    let c = CString::new(device).map_err(|_| DpdkError::NoSuchPort(device.to_owned()))?;
    let mut id = 0u16;
    // SAFETY: `c` is a valid C string, `id` a valid out-parameter.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    if rc != 0 {
        return Err(DpdkError::NoSuchPort(device.to_owned()));
    }
    Ok(id)
}

pub(super) fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno.
    unsafe { sys::cutover_errno() }
}

pub(super) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a NUL-terminated string
    // (static or thread-local) valid until the next call on this thread.
    unsafe { CStr::from_ptr(sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}

/// The calling thread's CPU set, to restore after `rte_eal_init`.
pub(super) fn thread_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain old data (all-zero is the empty set) and
    // sched_getaffinity writes at most `size_of` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (rc == 0).then_some(set)
    }
}

pub(super) fn restore_thread_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t read by the call only.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "restoring CPU affinity after rte_eal_init");
    }
}
