//! The figures a run produces, as JSON (for scripts and for BENCHMARKS.md)
//! and as a table (for people).

use super::histogram::Summary;
use super::procfs::WindowUsage;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// Workers killed.
    pub sample: usize,
    /// Of those, reported `disconnected` in time.
    pub detected: usize,
    /// Kill to the `disconnected` report on WatchWorkers.
    pub latency: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Degraded {
    pub sample: usize,
    pub detected: usize,
    /// The heartbeat timeout the coordinator applies.
    pub timeout_ms: u64,
    /// Last keepalive sent to the `degraded` report.
    pub since_last_keepalive: Summary,
    /// How much later than the timeout itself the report came.
    pub lag_over_timeout: Summary,
    /// Why the phase did not run (a heartbeat timeout past the patience).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// SIGKILL to the new process being started.
    pub down_ms: f64,
    /// New process started to serving gRPC health.
    pub ready_s: f64,
    /// New process started to every worker registered and healthy again.
    pub reconverge_s: Option<f64>,
    /// Records the new coordinator holds.
    pub registered: usize,
    /// Distinct worker ids before the restart.
    pub ids_before: usize,
    /// Records under an id no worker had before (duplicates).
    pub new_ids: usize,
    /// Ids held before and not registered again.
    pub missing: usize,
    /// Welcomes that gave a worker a different id than it had.
    pub id_changes: u64,
    /// The new coordinator while the fleet came back.
    pub usage: WindowUsage,
}

#[derive(Debug, Clone, Serialize)]
pub struct FalsePositives {
    /// Reports of a worker as degraded, disconnected or removed that the
    /// bench did not cause: outside the fleet bench's kill, silence and
    /// restart phases; in the soak, of a never-stopped worker at all.
    pub reports: usize,
    pub workers: usize,
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub coordinator: String,
    pub coordinator_log: Option<String>,
    pub spawned: bool,
    /// Mutual TLS (`--tls`): every worker with its own client certificate.
    pub tls: bool,
    /// Issuing those certificates in the bench process, before the ramp.
    pub certificates_s: Option<f64>,
    pub workers: usize,
    pub keepalive_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub duration_s: f64,
    pub ramp_rate: f64,
    pub sources: usize,
    /// RLIMIT_NOFILE (soft, hard) after raising.
    pub fd_limit: (u64, u64),
    pub connected: usize,
    pub connect_all_s: Option<f64>,
    /// Dial to Welcome, per worker.
    pub welcome: Summary,
    pub failed_attempts: u64,
    pub baseline_rss_kib: Option<u64>,
    pub ramp: WindowUsage,
    pub idle: Option<WindowUsage>,
    pub idle_per_worker_kib: Option<f64>,
    pub keepalive: WindowUsage,
    pub keepalive_per_worker_kib: Option<f64>,
    pub settle: WindowUsage,
    /// Keepalive sent to its ack received.
    pub rtt: Summary,
    pub kill: Detection,
    pub degraded: Degraded,
    pub restart: Option<Restart>,
    pub false_positives: FalsePositives,
    /// Welcomed sessions that ended without the bench asking (restart excluded).
    pub unexpected_session_ends: u64,
    pub watch_snapshots: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EtcdReport {
    pub endpoint: String,
    pub etcd_log: Option<String>,
    pub version: Option<String>,
    pub clients: usize,
    pub keepalive_ms: u64,
    pub ttl_s: u64,
    pub duration_s: f64,
    pub fd_limit: (u64, u64),
    pub connected: usize,
    pub connect_all_s: Option<f64>,
    /// Dial to LeaseGrant answered, per client.
    pub grant: Summary,
    pub failed_attempts: u64,
    pub baseline_rss_kib: Option<u64>,
    pub ramp: WindowUsage,
    pub idle: Option<WindowUsage>,
    pub idle_per_client_kib: Option<f64>,
    pub keepalive: WindowUsage,
    pub keepalive_per_client_kib: Option<f64>,
    /// LeaseKeepAliveRequest sent to its response received.
    pub rtt: Summary,
    pub unexpected_stream_ends: u64,
    pub notes: Vec<String>,
}

/// One line on stderr as a run goes, so that a long run never looks hung
/// (the table goes to stdout at the end).
pub fn progress(line: std::fmt::Arguments<'_>) {
    eprintln!("bench fleet: {line}");
}

fn lat(s: &Summary) -> String {
    if s.count == 0 {
        return "-".into();
    }
    format!("{:.2} / {:.2} / {:.2} ms (n={})", s.p50_ms, s.p99_ms, s.max_ms, s.count)
}

fn usage(u: &WindowUsage) -> String {
    match u.target {
        Some(t) => format!(
            "{:.3} cores, RSS {:.1} MiB (bench {:.2} cores, machine {:.2} cores)",
            t.cores,
            t.rss_kib as f64 / 1024.0,
            u.bench_cores,
            u.machine_cores
        ),
        None => format!(
            "(pid unknown) bench {:.2} cores, machine {:.2} cores",
            u.bench_cores, u.machine_cores
        ),
    }
}

fn per(v: Option<f64>) -> String {
    v.map_or("-".into(), |k| format!("{k:.1} KiB ({:.1} KB)", k * 1.024))
}

fn row(out: &mut String, k: &str, v: impl std::fmt::Display) {
    let _ = writeln!(out, "  {k:<34} {v}");
}

impl FleetReport {
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "edgeplane bench fleet: {} workers, keepalive {} ms, heartbeat timeout {} ms, {} ({}{})",
            self.workers,
            self.keepalive_ms,
            self.heartbeat_timeout_ms,
            self.coordinator,
            if self.spawned { "child process" } else { "external" },
            if self.tls {
                ", mutual TLS: a client certificate per worker"
            } else {
                ""
            }
        );
        if let Some(s) = self.certificates_s {
            row(
                &mut o,
                "client certificates issued",
                format!("{} in {s:.2} s (bench process, before the ramp)", self.workers),
            );
        }
        row(
            &mut o,
            "open-file limit (soft/hard)",
            format!("{}/{}", self.fd_limit.0, self.fd_limit.1),
        );
        row(
            &mut o,
            "workers connected",
            format!("{} / {}", self.connected, self.workers),
        );
        row(
            &mut o,
            "time to connect all",
            self.connect_all_s.map_or("not all connected".into(), |s| {
                format!(
                    "{s:.2} s (ramp {}/s, {} source addresses)",
                    self.ramp_rate, self.sources
                )
            }),
        );
        row(&mut o, "dial to Welcome p50/p99/max", lat(&self.welcome));
        row(&mut o, "failed connect attempts", self.failed_attempts);
        row(
            &mut o,
            "coordinator RSS before workers",
            self.baseline_rss_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
        row(&mut o, "ramp", usage(&self.ramp));
        if let Some(i) = &self.idle {
            row(&mut o, "idle-connected", usage(i));
            row(&mut o, "  RSS per worker", per(self.idle_per_worker_kib));
        }
        row(
            &mut o,
            format!("keepalives ({:.0} s)", self.duration_s).as_str(),
            usage(&self.keepalive),
        );
        row(&mut o, "  RSS per worker", per(self.keepalive_per_worker_kib));
        row(&mut o, "keepalive RTT p50/p99/max", lat(&self.rtt));
        row(
            &mut o,
            "disconnect -> reported",
            format!(
                "{} ({}/{} detected)",
                lat(&self.kill.latency),
                self.kill.detected,
                self.kill.sample
            ),
        );
        if self.degraded.skipped.is_some() {
            row(&mut o, "silence phase", "skipped (see the notes)");
        }
        row(
            &mut o,
            "last keepalive -> degraded",
            format!(
                "{} ({}/{} detected)",
                lat(&self.degraded.since_last_keepalive),
                self.degraded.detected,
                self.degraded.sample
            ),
        );
        row(
            &mut o,
            "  beyond the timeout",
            format!(
                "{} (timeout {} ms)",
                lat(&self.degraded.lag_over_timeout),
                self.degraded.timeout_ms
            ),
        );
        match &self.restart {
            Some(r) => {
                row(
                    &mut o,
                    "restart: all registered again",
                    r.reconverge_s.map_or("NOT within patience".into(), |s| {
                        format!(
                            "{s:.2} s after the new process started (serving after {:.2} s)",
                            r.ready_s
                        )
                    }),
                );
                row(
                    &mut o,
                    "  records / new ids / missing",
                    format!(
                        "{} / {} / {} (id changes {})",
                        r.registered, r.new_ids, r.missing, r.id_changes
                    ),
                );
                row(&mut o, "  while reconverging", usage(&r.usage));
            }
            None => row(&mut o, "restart", "not run"),
        }
        row(&mut o, "settle", usage(&self.settle));
        row(
            &mut o,
            "false positives",
            format!(
                "{} reports, {} workers {:?}",
                self.false_positives.reports, self.false_positives.workers, self.false_positives.examples
            ),
        );
        row(&mut o, "unexpected session ends", self.unexpected_session_ends);
        row(&mut o, "watch snapshots", self.watch_snapshots);
        if let Some(l) = &self.coordinator_log {
            row(&mut o, "coordinator log", l);
        }
        for n in &self.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        o
    }
}

impl EtcdReport {
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "edgeplane bench etcd: {} clients, one lease each (TTL {} s), LeaseKeepAlive every {} ms, {} {}",
            self.clients,
            self.ttl_s,
            self.keepalive_ms,
            self.endpoint,
            self.version.as_deref().unwrap_or("")
        );
        row(
            &mut o,
            "open-file limit (soft/hard)",
            format!("{}/{}", self.fd_limit.0, self.fd_limit.1),
        );
        row(
            &mut o,
            "clients connected",
            format!("{} / {}", self.connected, self.clients),
        );
        row(
            &mut o,
            "time to connect all",
            self.connect_all_s
                .map_or("not all connected".into(), |s| format!("{s:.2} s")),
        );
        row(&mut o, "dial to lease granted p50/p99/max", lat(&self.grant));
        row(&mut o, "failed connect attempts", self.failed_attempts);
        row(
            &mut o,
            "etcd RSS before clients",
            self.baseline_rss_kib
                .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
        row(&mut o, "ramp", usage(&self.ramp));
        if let Some(i) = &self.idle {
            row(&mut o, "idle-connected", usage(i));
            row(&mut o, "  RSS per client", per(self.idle_per_client_kib));
        }
        row(
            &mut o,
            format!("keepalives ({:.0} s)", self.duration_s).as_str(),
            usage(&self.keepalive),
        );
        row(&mut o, "  RSS per client", per(self.keepalive_per_client_kib));
        row(&mut o, "keepalive RTT p50/p99/max", lat(&self.rtt));
        row(&mut o, "unexpected stream ends", self.unexpected_stream_ends);
        if let Some(l) = &self.etcd_log {
            row(&mut o, "etcd log", l);
        }
        for n in &self.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        o
    }
}
