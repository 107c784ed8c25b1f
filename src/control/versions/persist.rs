//! The manager to and from the state file's [`PersistedState`].
//!
//! Restoring checks the invariants the data plane relies on (one active
//! version per service, unique slots, uids and live VIPs) instead of
//! trusting the file: an inconsistent file stops the start, as a corrupt
//! one does.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::control::config::{Config, Family, Forwarding, PortSpec, Protocol};
use crate::control::state::{
    PersistedBackend, PersistedCooldown, PersistedService, PersistedState, PersistedVersion,
    StateError, FORMAT,
};
use crate::snapshot::{VersionState, MAX_VERSIONS};

use super::{
    alloc::Slots, build, dur_ms, unix_ms, Backend, DrainSettings, ReleaseReason, ServiceRecord,
    Version, VersionManager, HISTORY,
};

impl VersionManager {
    /// The state to write to the state file after a change.
    pub fn persisted(&self, now: SystemTime) -> PersistedState {
        let mut cooldowns: Vec<PersistedCooldown> = self
            .cooldowns
            .iter()
            .map(|(vip, until)| PersistedCooldown {
                vip: *vip,
                until: *until,
            })
            .collect();
        cooldowns.sort_by_key(|c| c.vip);
        PersistedState {
            format: FORMAT,
            written_at: unix_ms(now),
            next_uid: self.next_uid,
            services: self.services.iter().map(|r| service_out(r)).collect(),
            cooldowns,
        }
    }

    /// Resumes from a state file: every version keeps its id, uid, slot,
    /// VIPs, health and timestamps, so a draining version goes on draining
    /// (its TTL + grace and timeout count from the original
    /// `draining_since`; its quiet period from `now`, because the workers'
    /// packet times start afresh) and cooling VIPs keep cooling.
    ///
    /// Global settings (pools, TTL, data plane, Maglev size) come from
    /// `cfg`; services keep the settings they were persisted with. If the
    /// file changed while the process was down, call
    /// [`VersionManager::reconcile`] with `cfg` right after.
    pub fn restore(
        cfg: &Config,
        state: PersistedState,
        now: SystemTime,
    ) -> Result<VersionManager, StateError> {
        if state.format != FORMAT {
            return Err(StateError::Invalid(format!(
                "format {} where {FORMAT} was expected",
                state.format
            )));
        }
        let now = unix_ms(now);
        let mut m = VersionManager::empty(cfg, now);
        let mut used_slots = BTreeSet::new();
        let mut uids = HashSet::new();
        let mut names = HashSet::new();
        for ps in state.services {
            if !names.insert(ps.name.clone()) {
                return Err(invalid(&ps.name, "the service is listed twice"));
            }
            let rec = service_in(ps, &mut used_slots, &mut uids, &mut m.held, state.next_uid)?;
            m.services.push(Arc::new(rec));
        }
        for rec in m.services.iter_mut().map(Arc::make_mut) {
            for v in &mut rec.live {
                for b in &mut v.backends {
                    b.next_hop = m.neighbors.get(&b.addr).copied();
                }
                let table = build::maglev(m.table_size, &v.backends)
                    .map_err(|e| invalid(&rec.name, &e.to_string()))?;
                v.maglev = Some(Arc::new(table));
            }
        }
        m.next_uid = state.next_uid;
        m.slots = Slots::from_used(MAX_VERSIONS, &used_slots);
        m.cooldowns = state
            .cooldowns
            .into_iter()
            .filter(|c| c.until > now && !m.held.contains(&c.vip))
            .map(|c| (c.vip, c.until))
            .collect();
        m.revision = 1;
        Ok(m)
    }
}

fn invalid(service: &str, why: &str) -> StateError {
    StateError::Invalid(format!("service \"{service}\": {why}"))
}

fn service_out(rec: &ServiceRecord) -> PersistedService {
    PersistedService {
        name: rec.name.clone(),
        ports: rec.ports.iter().map(ToString::to_string).collect(),
        forwarding: match rec.forwarding {
            Forwarding::Ipip => "ipip",
            Forwarding::L2dsr => "l2dsr",
        }
        .into(),
        families: rec.families.iter().map(ToString::to_string).collect(),
        pool: rec.pool.clone(),
        vips: rec.vips.clone(),
        drain_grace_ms: dur_ms(rec.drain.grace),
        drain_quiet_ms: dur_ms(rec.drain.quiet),
        drain_timeout_ms: dur_ms(rec.drain.timeout),
        next_id: rec.next_id,
        removed: rec.removed,
        versions: rec
            .history
            .iter()
            .chain(rec.live.iter())
            .map(|v| PersistedVersion {
                id: v.id,
                uid: v.uid,
                slot: v.slot,
                vips: v.vips.clone(),
                backends: v
                    .backends
                    .iter()
                    .map(|b| PersistedBackend {
                        addr: b.addr,
                        healthy: b.healthy,
                    })
                    .collect(),
                state: v.state,
                created_at: v.created_at,
                draining_since: v.draining_since,
                released_at: v.released_at,
                release_reason: v.release_reason,
            })
            .collect(),
    }
}

fn service_in(
    ps: PersistedService,
    used_slots: &mut BTreeSet<u32>,
    uids: &mut HashSet<u64>,
    held: &mut HashSet<IpAddr>,
    next_uid: u64,
) -> Result<ServiceRecord, StateError> {
    let name = ps.name;
    let bad = |why: String| invalid(&name, &why);
    let mut ports = ps
        .ports
        .iter()
        .map(|p| parse_port(p).ok_or_else(|| bad(format!("bad port \"{p}\""))))
        .collect::<Result<Vec<_>, _>>()?;
    ports.sort();
    let forwarding = match ps.forwarding.as_str() {
        "ipip" => Forwarding::Ipip,
        "l2dsr" => Forwarding::L2dsr,
        other => return Err(bad(format!("bad forwarding \"{other}\""))),
    };
    let families = ps
        .families
        .iter()
        .map(|f| match f.as_str() {
            "ipv4" => Ok(Family::Ipv4),
            "ipv6" => Ok(Family::Ipv6),
            other => Err(bad(format!("bad family \"{other}\""))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut live = Vec::new();
    let mut history = VecDeque::new();
    let mut ids = HashSet::new();
    let mut active = 0;
    for pv in ps.versions {
        let id = pv.id;
        let vbad = |why: &str| bad(format!("version {id}: {why}"));
        if id == 0 || id >= ps.next_id || !ids.insert(id) {
            return Err(vbad("id is zero, duplicated or not below next_id"));
        }
        if pv.uid == 0 || pv.uid >= next_uid || !uids.insert(pv.uid) {
            return Err(vbad("uid is zero, duplicated or not below next_uid"));
        }
        let v = Version {
            id,
            uid: pv.uid,
            slot: pv.slot,
            vips: pv.vips,
            backends: pv
                .backends
                .into_iter()
                .map(|b| Backend {
                    addr: b.addr,
                    next_hop: None,
                    healthy: b.healthy,
                })
                .collect(),
            state: pv.state,
            created_at: pv.created_at,
            draining_since: pv.draining_since,
            released_at: pv.released_at,
            release_reason: pv.release_reason,
            maglev: None,
        };
        if v.state == VersionState::Released {
            history.push_back(v);
            continue;
        }
        if v.backends.is_empty() {
            return Err(vbad("a live version without backends"));
        }
        if usize::try_from(v.slot).map_or(true, |s| s >= MAX_VERSIONS) || !used_slots.insert(v.slot)
        {
            return Err(vbad(&format!("slot {} is out of range or taken", v.slot)));
        }
        for vip in &v.vips {
            if !held.insert(*vip) {
                return Err(vbad(&format!("VIP {vip} is held twice")));
            }
        }
        match v.state {
            VersionState::Active => active += 1,
            _ if v.draining_since.is_none() => {
                return Err(vbad("draining without draining_since"));
            }
            _ => {}
        }
        live.push(v);
    }
    if active > 1 || (active == 1 && ps.removed) {
        return Err(bad(format!(
            "{active} active versions (removed: {})",
            ps.removed
        )));
    }
    live.sort_by_key(|v| v.id);
    while history.len() > HISTORY {
        history.pop_front();
    }
    Ok(ServiceRecord {
        label: Arc::from(name.as_str()),
        name: name.clone(),
        ports,
        forwarding,
        families,
        pool: ps.pool,
        vips: ps.vips,
        drain: DrainSettings {
            grace: Duration::from_millis(ps.drain_grace_ms),
            quiet: Duration::from_millis(ps.drain_quiet_ms),
            timeout: Duration::from_millis(ps.drain_timeout_ms),
        },
        next_id: ps.next_id,
        removed: ps.removed,
        live,
        history,
        // Counted since this process started, not persisted.
        rollouts: 0,
        releases: [0; ReleaseReason::ALL.len()],
    })
}

/// `tcp/80` → the port spec.
fn parse_port(s: &str) -> Option<PortSpec> {
    let (proto, port) = s.split_once('/')?;
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(PortSpec { protocol, port })
}
