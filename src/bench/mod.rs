//! `edgeplane bench`: how many workers one coordinator holds, at what cost,
//! and how fast it notices a failure, measured against a real coordinator
//! process over loopback. See `BENCHMARKS.md` for the figures.
//!
//! Map of the module:
//! - [`args`]: the flags of `bench fleet` and `bench etcd`.
//! - [`cluster`]: a fleet over several coordinators and one etcd.
//! - [`fleet`]: the edgeplane run, phase by phase (the disturbing ones,
//!   kill, silence and restart, in `phases`); [`etcd`] the same load
//!   against etcd leases, for a side-by-side figure; [`reach`]: whether a
//!   coordinator answers at all, asked before a run leans on it.
//! - [`sim_worker`]: one simulated worker; [`connector`]: its socket (own
//!   loopback source address, kill switch); [`ramp`]: bringing a fleet up;
//!   [`pki`]: the CA and certificates of a mutual-TLS run (`--tls`).
//! - [`watch`]: the fleet as `WatchWorkers` reports it.
//! - [`procfs`]: CPU and memory from `/proc`; [`histogram`]: latencies;
//!   [`fdlimit`]: the open-file limit; [`child`]: servers run as children.
//! - [`report`]: the figures, as a table and as JSON.
//! - [`overload`]: keepalives while the proxy is saturated and under a
//!   connection flood ([`http_load`]: the proxy load and its backend,
//!   [`flood`]: the flood); [`stage`]: the coordinator, backend and fleet
//!   they share.
//! - [`soak`]: a bounded run of a churning fleet, sampled for leaks
//!   ([`flatness`]: the verdict, [`svg`]: the plot).

pub mod args;
pub mod child;
pub mod churn;
pub mod cluster;
pub mod connector;
pub mod error;
pub mod etcd;
pub mod etcd_proto;
pub mod fdlimit;
pub mod flatness;
pub mod fleet;
pub mod flood;
pub mod histogram;
pub mod http_load;
pub mod load;
pub mod overload;
mod phases;
pub mod pki;
pub mod procfs;
pub mod ramp;
pub mod reach;
pub mod report;
pub mod sim_worker;
pub mod soak;
mod soak_report;
pub mod stage;
pub mod svg;
pub mod watch;

pub use args::{EtcdArgs, FleetArgs, LoadArgs};
pub use error::BenchError;
pub use report::{EtcdReport, FleetReport};

/// `edgeplane bench ...`
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BenchCommand {
    /// Simulated workers against an edgeplane coordinator: fleet size, CPU and
    /// memory per worker, keepalive round trips, failure detection, restart.
    Fleet(FleetArgs),
    /// The same load against etcd: one lease and one LeaseKeepAlive stream per client.
    Etcd(EtcdArgs),
    /// A fleet over several coordinator processes sharing one etcd: etcd
    /// writes in steady state, cost per coordinator, and a coordinator's kill.
    Cluster(cluster::ClusterArgs),
    /// Keepalive round trips of a fleet with no load, with the coordinator's
    /// proxy saturated, and under a connection flood.
    Overload(overload::OverloadArgs),
    /// A bounded soak of a churning fleet with proxy load: memory, open
    /// files, threads, tasks and round trips sampled over time.
    Soak(soak::SoakArgs),
    /// Part of a simulated fleet, for `bench cluster --load-processes`.
    #[command(hide = true)]
    Load(load::LoadProcessArgs),
    /// The fast backend, as a process of its own (`--backend-cpus`).
    #[command(hide = true)]
    Backend(http_load::BackendArgs),
}

/// Runs a bench; prints its table to stdout (and JSON where asked).
pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let (table, json, path) = match &args.command {
        BenchCommand::Fleet(a) => {
            let r = fleet::run(a).await?;
            (r.table(), serde_json::to_string_pretty(&r), a.load.json.clone())
        }
        BenchCommand::Etcd(a) => {
            let r = etcd::run(a).await?;
            (r.table(), serde_json::to_string_pretty(&r), a.load.json.clone())
        }
        BenchCommand::Load(a) => {
            load::run(a).await?;
            return Ok(());
        }
        BenchCommand::Backend(a) => {
            http_load::run_backend(a).await?;
            return Ok(());
        }
        BenchCommand::Overload(a) => {
            let r = overload::run(a).await?;
            (r.table(), serde_json::to_string_pretty(&r), a.stage.json.clone())
        }
        BenchCommand::Soak(a) => {
            let r = soak::run(a).await?;
            (r.table(), serde_json::to_string_pretty(&r), a.stage.json.clone())
        }
        BenchCommand::Cluster(a) => {
            let r = cluster::run(a).await?;
            (r.table(), serde_json::to_string_pretty(&r), a.load.json.clone())
        }
    };
    print!("{table}");
    if let Some(p) = path {
        let json = json.map_err(|e| BenchError::Settings(format!("report is not serialisable: {e}")))?;
        fleet::write_json(&p, &json)?;
    }
    Ok(())
}
