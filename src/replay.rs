//! `cutover replay`: the data path over a capture file.
//!
//! Reads frames from a pcap, runs them through one pipeline in bursts (the
//! capture's timestamps are the pipeline's clock), writes what it forwards
//! and the ICMP errors it makes to another pcap, and reports packets per
//! service, version and VIP and drops per reason. It is the offline twin of
//! `cutover run`: same snapshot, same pipeline.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::control::bootstrap;
use crate::control::config::Config;
use crate::dataplane::flow::FlowTimeouts;
use crate::dataplane::frame::{FrameBuf, PacketBuf};
use crate::dataplane::pipeline::{self, Pipeline, PipelineOptions, Verdict};
use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::io::pcap::PcapPort;
use crate::io::Port;

/// Frames per burst, as on a NIC.
pub const BURST: usize = 32;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pcap(#[from] crate::io::pcap::PcapPortError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
}

/// Forwarded packets of one (service, version, VIP).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VipCount {
    pub service: String,
    pub version: u32,
    pub vip: IpAddr,
    pub packets: u64,
    pub bytes: u64,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub packets_in: u64,
    pub forwarded: u64,
    pub icmp_replies: u64,
    /// Outer fragments beyond the first, written in addition.
    pub extra_fragments: u64,
    pub vips: Vec<VipCount>,
    /// Drops by reason label; every reason is listed, zeros included.
    pub drops: BTreeMap<String, u64>,
}

/// Flow-table idle timeouts from the configuration. Closed TCP flows are
/// kept ten seconds (or the TCP idle timeout if shorter) so that late
/// retransmissions still reach their backend.
pub fn timeouts(cfg: &Config) -> FlowTimeouts {
    let tcp = duration_ns(cfg.dataplane.tcp_idle_timeout);
    FlowTimeouts {
        tcp_idle_ns: tcp,
        udp_idle_ns: duration_ns(cfg.dataplane.udp_idle_timeout),
        tcp_closing_ns: tcp.min(10_000_000_000),
    }
}

fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Replays `input` through the data path of `cfg`, writing to `output`.
pub fn run(cfg: &Config, input: &Path, output: &Path) -> Result<ReplayReport, ReplayError> {
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReplayError::Io { path, source }
    };
    let snap = bootstrap::initial_snapshot(cfg)?;
    let mut port = PcapPort::open(Some(input), Some(output), BURST * 2)?;
    let stats = Arc::new(WorkerStats::new());
    let mut pipe = Pipeline::new(
        PipelineOptions {
            flow_table_size: cfg.dataplane.flow_table_size,
            timeouts: timeouts(cfg),
            burst: BURST,
        },
        Arc::clone(&stats),
    );
    let mut burst: Vec<PacketBuf> = Vec::with_capacity(BURST);
    let mut verdicts = [Verdict::Drop(DropReason::NoService); BURST];
    let mut dsts: Vec<Option<IpAddr>> = Vec::with_capacity(BURST);
    let mut per_vip: BTreeMap<(u32, IpAddr), (u64, u64)> = BTreeMap::new();
    let mut report = ReplayReport {
        packets_in: 0,
        forwarded: 0,
        icmp_replies: 0,
        extra_fragments: 0,
        vips: Vec::new(),
        drops: BTreeMap::new(),
    };
    loop {
        burst.clear();
        let n = port.rx_burst(&mut burst, BURST).map_err(io_err(input))?;
        if n == 0 {
            break;
        }
        report.packets_in += n as u64;
        let now = duration_ns(port.last_timestamp());
        dsts.clear();
        dsts.extend(burst.iter().map(|b| pipeline::destination(b.bytes())));
        let lens: Vec<usize> = burst.iter().map(|b| b.bytes().len()).collect();
        pipe.process(&snap, now, &mut burst, &mut verdicts[..n]);
        let mut out = Vec::with_capacity(n);
        for (i, buf) in burst.drain(..).enumerate() {
            match verdicts[i] {
                Verdict::Forward => {
                    report.forwarded += 1;
                    if let Some(v) = dsts[i].and_then(|d| snap.version_for_vip(&d).map(|v| (v, d)))
                    {
                        let e = per_vip.entry((v.0.slot, v.1)).or_default();
                        e.0 += 1;
                        e.1 += lens[i] as u64;
                    }
                    out.push(buf);
                }
                Verdict::Reply => {
                    report.icmp_replies += 1;
                    out.push(buf);
                }
                Verdict::Drop(_) => port.free(buf),
            }
        }
        port.tx_burst(&mut out).map_err(io_err(output))?;
        let mut extra: Vec<PacketBuf> = pipe.extra().to_vec();
        report.extra_fragments += extra.len() as u64;
        port.tx_burst(&mut extra).map_err(io_err(output))?;
        pipe.recycle_extra();
    }
    port.finish().map_err(io_err(output))?;
    for ((slot, vip), (packets, bytes)) in per_vip {
        let Some(v) = snap.version(slot) else {
            continue;
        };
        let service = snap
            .service(v.service)
            .map(|s| s.name.to_string())
            .unwrap_or_default();
        report.vips.push(VipCount {
            service,
            version: v.id,
            vip,
            packets,
            bytes,
        });
    }
    for r in DropReason::ALL {
        report
            .drops
            .insert(r.as_str().to_string(), stats.dropped(r));
    }
    Ok(report)
}

impl ReplayReport {
    /// The human-readable table `cutover replay` prints.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "packets in: {}  forwarded: {}  icmp replies: {}  extra fragments: {}",
            self.packets_in, self.forwarded, self.icmp_replies, self.extra_fragments
        );
        let _ = writeln!(
            s,
            "\n{:<20} {:>7} {:<40} {:>10} {:>12}",
            "SERVICE", "VERSION", "VIP", "PACKETS", "BYTES"
        );
        for v in &self.vips {
            let _ = writeln!(
                s,
                "{:<20} {:>7} {:<40} {:>10} {:>12}",
                v.service, v.version, v.vip, v.packets, v.bytes
            );
        }
        let _ = writeln!(s, "\n{:<20} {:>10}", "DROP REASON", "PACKETS");
        for (r, n) in &self.drops {
            let _ = writeln!(s, "{:<20} {:>10}", r, n);
        }
        s
    }
}
