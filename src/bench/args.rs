//! What a bench run can be told. Every bound is explicit: the fleet size,
//! the ramp, each window, and the patience for any one wait, so that a run
//! always ends by itself.

use crate::duration::parse_duration;
use std::path::PathBuf;
use std::time::Duration;

/// Settings shared by the edgeplane and the etcd runs, so that both are
/// loaded the same way.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Simulated clients, each on its own HTTP/2 connection and stream.
    #[arg(long, default_value_t = 1000)]
    pub workers: usize,

    /// Keepalive interval of every client.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub keepalive: Duration,

    /// Length of the window in which keepalives flow and are measured.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Window with every keepalive paused, to measure the idle-connected cost
    /// (must end before the heartbeat timeout; 0 skips it).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub idle: Duration,

    /// Clients started per second while ramping up.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp_rate: f64,

    /// Connects in flight at most while ramping up.
    #[arg(long, default_value_t = 256)]
    pub ramp_in_flight: usize,

    /// Loopback source addresses to spread clients over (127.0.0.2 upwards),
    /// so that ephemeral ports do not run out.
    #[arg(long, default_value_t = 32)]
    pub sources: usize,

    /// Bound on any single wait (all connected, all detected, ...).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub patience: Duration,

    /// Also write the report as JSON to this file (`-` for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// How a bench starts its coordinator as a child process: which binary,
/// where its log goes, and what else it is told. One struct, so that every
/// bench that starts a coordinator spells these flags alike.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ChildCoordinatorArgs {
    /// The `edgeplane` binary to start as the coordinator (default: this
    /// one). A wrapper script that ends in `exec edgeplane "$@"` works too
    /// (a profiler's, say): the pid the bench reads stays the coordinator's.
    #[arg(long)]
    pub coordinator_bin: Option<PathBuf>,

    /// Where the child coordinator's log goes (default: a file in the temp dir).
    #[arg(long)]
    pub coordinator_log: Option<PathBuf>,

    /// Extra arguments for the child coordinator (repeatable), e.g.
    /// `--coordinator-arg=--http2-keepalive=60s`.
    #[arg(long = "coordinator-arg", allow_hyphen_values = true)]
    pub coordinator_args: Vec<String>,
}

impl ChildCoordinatorArgs {
    /// The binary to start: `--coordinator-bin`, else the running one.
    pub fn bin(&self) -> std::io::Result<PathBuf> {
        given_or_this_binary(self.coordinator_bin.as_ref())
    }

    /// The log file: `--coordinator-log`, else `default` in the temp dir.
    pub fn log_or(&self, default: &str) -> PathBuf {
        self.coordinator_log
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(default))
    }
}

/// `given`, else the binary running now: what a bench starts as a child
/// coordinator (or as a `bench load` process) when not told otherwise.
pub fn given_or_this_binary(given: Option<&PathBuf>) -> std::io::Result<PathBuf> {
    match given {
        Some(b) => Ok(b.clone()),
        None => std::env::current_exe(),
    }
}

/// `edgeplane bench fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// A running coordinator to load (`http://host:port`). Without it, the
    /// bench starts its own coordinator as a child process.
    #[arg(long)]
    pub coordinator: Option<String>,

    /// The pid of `--coordinator`, to read its CPU and memory from /proc.
    #[arg(long)]
    pub coordinator_pid: Option<u32>,

    #[command(flatten)]
    pub child: ChildCoordinatorArgs,

    /// Mutual TLS: the child coordinator serves TLS with a server
    /// certificate and a cluster CA the bench makes, and requires a client
    /// certificate on every worker stream (`--require-client-cert`); each
    /// simulated worker presents its own, issued by that CA for its own
    /// worker id before the ramp. Not with `--coordinator`.
    #[arg(long, conflicts_with = "coordinator")]
    pub tls: bool,

    /// Heartbeat timeout given to the child coordinator: silent this long, a
    /// worker is `degraded`. (With `--coordinator`, the one its Welcome says.)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// Workers killed abruptly (connection dropped) to measure disconnect detection.
    #[arg(long, default_value_t = 100)]
    pub kill: usize,

    /// Workers silenced (stream open, no keepalives) to measure degraded detection.
    #[arg(long, default_value_t = 100)]
    pub silence: usize,

    /// Time over which the kills (and the silences) are spread.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub spread: Duration,

    /// Skip the coordinator restart (always skipped with `--coordinator`).
    #[arg(long)]
    pub no_restart: bool,

    /// Window at the end, keepalives flowing, in which false positives are still counted.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub settle: Duration,

    /// First reconnect delay of a worker (the agent's default).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub reconnect_min: Duration,

    /// Cap on a worker's reconnect delay (the agent's default).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub reconnect_max: Duration,

    #[command(flatten)]
    pub load: LoadArgs,
}

/// `edgeplane bench etcd`: the same load against etcd's leases.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// A running etcd to load (`http://host:2379`). Without it, the bench
    /// starts `--etcd-bin` as a child process with a fresh data dir.
    #[arg(long)]
    pub endpoint: Option<String>,

    /// The pid of `--endpoint`, to read its CPU and memory from /proc.
    #[arg(long)]
    pub etcd_pid: Option<u32>,

    /// The etcd server binary (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,

    /// Where the child etcd's log goes (default: a file in the temp dir).
    #[arg(long)]
    pub etcd_log: Option<PathBuf>,

    /// TTL of each client's lease.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,

    #[command(flatten)]
    pub load: LoadArgs,
}
