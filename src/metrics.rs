//! Prometheus metrics of a node (`/metrics` of `--http-listen`).
//!
//! Two sources: instruments that IO code bumps as it happens (frames and bytes per kind,
//! dropped frames, handshake failures, WAL write and fsync latency, compactions), and the
//! driver's [`Status`], read once per scrape (members by state, the detector's counters,
//! quorum, health score, LSNs). The machine stays free of metrics code: it keeps plain
//! counters and the scrape reads them.

use crate::message::{FrameKind, Status};
use crate::store::WalStats;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;

/// The content type of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl EncodeLabelValue for FrameKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: FrameKind,
}

/// Why an outgoing frame was not sent.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// The peer's writer queue was full (a slow peer; anti-entropy repairs).
    QueueFull,
    /// The connection closed before the frame was written.
    Closed,
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Closed => "closed",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabel {
    pub reason: DropReason,
}

/// Histogram buckets for disk latency: 50 µs to about 1.6 s.
fn disk_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 16)
}

/// A WAL write (to the OS) of one batch, in seconds.
pub fn wal_write_histogram() -> Histogram {
    Histogram::new(disk_buckets())
}

/// One fsync (fdatasync) of the WAL, in seconds.
pub fn wal_fsync_histogram() -> Histogram {
    Histogram::new(disk_buckets())
}

/// The instruments of one node and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    frames_in: Family<KindLabel, Counter>,
    bytes_in: Family<KindLabel, Counter>,
    frames_out: Family<KindLabel, Counter>,
    bytes_out: Family<KindLabel, Counter>,
    dropped: Family<DropLabel, Counter>,
    pub(crate) handshake_failures: Counter,
    pub(crate) compactions: Counter,
    pub(crate) compaction_seconds: Histogram,
}

impl Metrics {
    /// The instruments, registered with the WAL's own histograms and this node's identity.
    pub fn new(node: &str, generation: u64, cluster: &str, wal: &WalStats) -> Metrics {
        let mut registry = Registry::with_prefix("gossip");
        registry.register(
            "node",
            "This node: id, generation, cluster, version",
            Info::new(vec![
                ("node_id".to_owned(), node.to_owned()),
                ("generation".to_owned(), generation.to_string()),
                ("cluster".to_owned(), cluster.to_owned()),
                ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            ]),
        );
        let m = Metrics {
            frames_in: Family::default(),
            bytes_in: Family::default(),
            frames_out: Family::default(),
            bytes_out: Family::default(),
            dropped: Family::default(),
            handshake_failures: Counter::default(),
            compactions: Counter::default(),
            compaction_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            registry: Registry::default(),
        };
        // Every kind from the start: a series that appears only when it first moves breaks
        // `rate()` over its first interval.
        for kind in FrameKind::ALL {
            let l = KindLabel { kind };
            let _ = m.frames_in.get_or_create(&l);
            let _ = m.bytes_in.get_or_create(&l);
            let _ = m.frames_out.get_or_create(&l);
            let _ = m.bytes_out.get_or_create(&l);
        }
        for reason in [DropReason::QueueFull, DropReason::Closed] {
            let _ = m.dropped.get_or_create(&DropLabel { reason });
        }
        registry.register(
            "frames_received",
            "Frames received from members and admin clients, by kind",
            m.frames_in.clone(),
        );
        registry.register_with_unit(
            "received",
            "Bytes of frames received, by kind",
            Unit::Bytes,
            m.bytes_in.clone(),
        );
        registry.register(
            "frames_sent",
            "Frames written to members, by kind",
            m.frames_out.clone(),
        );
        registry.register_with_unit(
            "sent",
            "Bytes of frames written to members, by kind",
            Unit::Bytes,
            m.bytes_out.clone(),
        );
        registry.register(
            "dropped_frames",
            "Frames to members not sent, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "handshake_failures",
            "Inbound connections whose handshake failed (wrong cluster, secret, protocol)",
            m.handshake_failures.clone(),
        );
        registry.register(
            "compactions",
            "Snapshots written (the WAL compacted into sled)",
            m.compactions.clone(),
        );
        registry.register_with_unit(
            "compaction",
            "Time a compaction took",
            Unit::Seconds,
            m.compaction_seconds.clone(),
        );
        registry.register_with_unit(
            "wal_write",
            "Time one WAL batch took to write to the OS",
            Unit::Seconds,
            wal.write_seconds.clone(),
        );
        registry.register_with_unit(
            "wal_fsync",
            "Time one WAL fsync took",
            Unit::Seconds,
            wal.fsync_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    pub(crate) fn received(&self, kind: FrameKind, bytes: usize) {
        count(&self.frames_in, &self.bytes_in, kind, bytes);
    }

    pub(crate) fn sent(&self, kind: FrameKind, bytes: usize) {
        count(&self.frames_out, &self.bytes_out, kind, bytes);
    }

    /// Counts handshake frames into the same families (the transport has no `Metrics`).
    pub(crate) fn frame_observer(&self) -> crate::transport::FrameObserver {
        let (frames_in, bytes_in) = (self.frames_in.clone(), self.bytes_in.clone());
        let (frames_out, bytes_out) = (self.frames_out.clone(), self.bytes_out.clone());
        crate::transport::FrameObserver::new(move |direction, kind, bytes| match direction {
            crate::transport::Direction::Sent => count(&frames_out, &bytes_out, kind, bytes),
            crate::transport::Direction::Received => count(&frames_in, &bytes_in, kind, bytes),
        })
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped.get_or_create(&DropLabel { reason }).inc();
    }

    /// Frames and bytes written to members since start, all kinds.
    pub fn sent_totals(&self) -> (u64, u64) {
        FrameKind::ALL.iter().fold((0, 0), |(f, b), &kind| {
            let l = KindLabel { kind };
            (
                f + self.frames_out.get_or_create(&l).get(),
                b + self.bytes_out.get_or_create(&l).get(),
            )
        })
    }

    /// Frames and bytes received from members and admin clients since start, all kinds.
    pub fn received_totals(&self) -> (u64, u64) {
        FrameKind::ALL.iter().fold((0, 0), |(f, b), &kind| {
            let l = KindLabel { kind };
            (
                f + self.frames_in.get_or_create(&l).get(),
                b + self.bytes_in.get_or_create(&l).get(),
            )
        })
    }

    /// Everything, in the Prometheus text format: the live instruments, then what `status`
    /// says now.
    pub fn render(&self, status: &Status) -> String {
        use prometheus_client::encoding::prometheus_text::encode;
        let mut out = String::new();
        // The encoders' only errors are the writer's, and a String never fails.
        encode(&mut out, &self.registry)
            .and_then(|()| encode(&mut out, &status_registry(status)))
            .expect("encoding to a String does not fail");
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// What the driver's status says, as metrics (built per scrape: constants of this moment).
fn status_registry(s: &Status) -> Registry {
    let mut r = Registry::with_prefix("gossip");
    let gauge = |r: &mut Registry, name: &str, help: &str, v: i64| {
        r.register(name, help, ConstGauge::new(v));
    };
    let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
        r.register(name, help, ConstCounter::new(v));
    };
    let members: Family<StateLabel, prometheus_client::metrics::gauge::Gauge> = Family::default();
    for (state, n) in [
        ("alive", s.alive),
        ("suspect", s.suspect),
        ("dead", s.dead),
        ("left", s.left),
    ] {
        members.get_or_create(&StateLabel { state }).set(n as i64);
    }
    r.register("members", "Members this node knows, by state", members);
    gauge(
        &mut r,
        "stable_members",
        "Members alive for the whole stability period",
        s.stable as i64,
    );
    gauge(
        &mut r,
        "flapping_members",
        "Members whose liveness flipped between alive and suspect",
        s.flapping.len() as i64,
    );
    gauge(
        &mut r,
        "connections",
        "Open connections to members",
        s.connections as i64,
    );
    gauge(
        &mut r,
        "joined",
        "1 once a seed answered (or no seed was needed)",
        i64::from(s.joined),
    );
    gauge(
        &mut r,
        "in_majority",
        "1 while this node sees more than half of the largest recent cluster",
        i64::from(s.in_majority),
    );
    gauge(
        &mut r,
        "down",
        "1 while split-brain downing holds this node down (its side lost)",
        i64::from(s.down.is_some()),
    );
    gauge(
        &mut r,
        "largest_cluster",
        "Largest recent cluster size (the quorum base)",
        s.largest_cluster as i64,
    );
    gauge(
        &mut r,
        "health_score",
        "Lifeguard local health: 0 is healthy; higher stretches our own timeouts",
        i64::from(s.awareness),
    );
    gauge(
        &mut r,
        "incarnation",
        "Our incarnation (raised to refute suspicions)",
        s.incarnation as i64,
    );
    gauge(
        &mut r,
        "wal_last_lsn",
        "Last LSN written to the WAL",
        s.wal_last_lsn as i64,
    );
    gauge(
        &mut r,
        "wal_durable_lsn",
        "Last LSN known synced",
        s.wal_durable_lsn as i64,
    );
    gauge(
        &mut r,
        "snapshot_lsn",
        "LSN the snapshot covers",
        s.snapshot_lsn as i64,
    );
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since the node started",
        (s.uptime_ms / 1000) as i64,
    );
    let c = &s.counters;
    counter(
        &mut r,
        "wal_batches",
        "Batches written to the WAL",
        c.wal_batches,
    );
    counter(&mut r, "wal_fsyncs", "WAL fsyncs", c.wal_fsyncs);
    counter(
        &mut r,
        "wal_written_bytes",
        "Bytes written to the WAL",
        s.wal_bytes_written,
    );
    counter(
        &mut r,
        "suspicions",
        "Members this node suspected",
        c.suspicions,
    );
    counter(
        &mut r,
        "declared_dead",
        "Members this node declared dead",
        c.declared_dead,
    );
    counter(
        &mut r,
        "refutations",
        "Suspicions of this node that it refuted",
        c.refutations,
    );
    counter(
        &mut r,
        "reassertions",
        "Times this node re-announced its own record",
        c.reassertions,
    );
    counter(
        &mut r,
        "downed_members",
        "Unreachable members declared dead and forgotten by split-brain downing",
        c.downed,
    );
    counter(
        &mut r,
        "refused_ids",
        "Members refused because another live process holds their id",
        c.refused_ids,
    );
    let probes: Family<OutcomeLabel, Counter> = Family::default();
    let p = &c.probes;
    for (outcome, n) in [
        ("ack", p.acked),
        ("late_ack", p.acked_late),
        ("failed", p.failed),
        ("abandoned", p.abandoned),
    ] {
        probes.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
    }
    r.register("probes", "Probes that ended, by outcome", probes);
    counter(&mut r, "probes_started", "Probes started", p.started);
    counter(
        &mut r,
        "ping_reqs",
        "Indirect probe requests sent",
        p.ping_reqs,
    );
    r
}

/// One frame of `kind` and its `bytes`, into a pair of families (one direction).
fn count(
    frames: &Family<KindLabel, Counter>,
    total: &Family<KindLabel, Counter>,
    kind: FrameKind,
    bytes: usize,
) {
    let l = KindLabel { kind };
    frames.get_or_create(&l).inc();
    total.get_or_create(&l).inc_by(bytes as u64);
}
