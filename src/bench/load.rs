//! `edgeplane bench load`: part of a simulated fleet, run by `bench cluster`
//! in a process of its own when the whole fleet needs more sockets than one
//! process may open. It dials the coordinators it is given and keeps its
//! workers connected until it is killed.

use super::connector::source_address;
use super::error::BenchError;
use super::ramp::Ramp;
use super::sim_worker::{self, SimShared, SimWorker};
use crate::duration::parse_duration;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `edgeplane bench load` (started by `bench cluster --load-processes`).
#[derive(Debug, Clone, clap::Args)]
pub struct LoadProcessArgs {
    /// The coordinators (`HOST:PORT`, comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub targets: Vec<SocketAddr>,
    /// Workers this process runs.
    #[arg(long)]
    pub workers: usize,
    /// The index of its first worker in the whole fleet (names, homes and
    /// source addresses follow the fleet-wide index).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub keepalive: Duration,
    #[arg(long, default_value_t = 32)]
    pub sources: usize,
    #[arg(long, default_value_t = 1000.0)]
    pub ramp_rate: f64,
    /// Shared by the fleet's processes: the instance ids' prefix.
    #[arg(long)]
    pub run_tag: String,
}

pub async fn run(args: &LoadProcessArgs) -> Result<(), BenchError> {
    if args.targets.is_empty() || args.workers == 0 || args.sources == 0 || args.sources > 250 {
        return Err(BenchError::Settings(
            "--targets, --workers and --sources 1..=250 are needed".into(),
        ));
    }
    super::fdlimit::raise_to_hard()?;
    let stop = CancellationToken::new();
    let endpoint = sim_worker::endpoint(&format!("http://{}", args.targets[0]))?;
    let shared = Arc::new(SimShared::new(
        args.targets.clone(),
        endpoint,
        args.keepalive,
        (Duration::from_millis(100), Duration::from_secs(2)),
        stop.clone(),
        args.run_tag.clone(),
    ));
    let k = args.targets.len();
    let workers: Vec<Arc<SimWorker>> = (args.offset..args.offset + args.workers)
        .map(|i| {
            Arc::new(SimWorker::starting_at(
                i,
                &args.run_tag,
                source_address(i, args.sources),
                i % k,
            ))
        })
        .collect();
    let ramp = Ramp {
        rate: args.ramp_rate,
        in_flight: 256,
    };
    ramp.run(workers.len(), &stop, |i, permit| {
        tokio::spawn(sim_worker::run(workers[i].clone(), shared.clone(), permit));
    })
    .await;
    // Until killed by the bench that started it.
    std::future::pending::<()>().await;
    Ok(())
}
