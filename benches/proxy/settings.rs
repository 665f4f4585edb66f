//! What the environment can change (`PROXY_BENCH_*`).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the environment can change.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    pub runs: usize,
    pub connections: usize,
    /// (wrk's CPU, the servers' CPU), when pinning.
    pub pin: Option<(usize, usize)>,
    pub only: Option<Vec<String>>,
    pub write: bool,
    pub perf: Option<PathBuf>,
    /// Another edgeplane binary (the previous commit's): its direct and
    /// tunnel paths run beside this one's, in the same rounds, so old and
    /// new are compared on the same machine at the same time.
    pub baseline: Option<PathBuf>,
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let duration = match var("PROXY_BENCH_DURATION") {
            Some(d) => humantime::parse_duration(&d).with_context(|| format!("PROXY_BENCH_DURATION={d}"))?,
            None => Duration::from_secs(10),
        };
        if duration < Duration::from_secs(1) || duration > Duration::from_secs(120) {
            bail!("PROXY_BENCH_DURATION must be between 1s and 120s");
        }
        let runs: usize = var("PROXY_BENCH_RUNS")
            .map_or(Ok(3), |v| v.parse())
            .context("PROXY_BENCH_RUNS")?;
        let connections: usize = var("PROXY_BENCH_CONNECTIONS")
            .map_or(Ok(32), |v| v.parse())
            .context("PROXY_BENCH_CONNECTIONS")?;
        if !(1..=9).contains(&runs) || !(1..=1024).contains(&connections) {
            bail!("PROXY_BENCH_RUNS must be 1..=9 and PROXY_BENCH_CONNECTIONS 1..=1024");
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pin = match var("PROXY_BENCH_PIN").as_deref() {
            Some("off") | Some("0") => None,
            _ if cpus >= 2 => Some((0, 1)),
            _ => None,
        };
        let perf = var("PROXY_BENCH_PERF").map(PathBuf::from);
        let baseline = var("PROXY_BENCH_BASELINE").map(PathBuf::from);
        if let Some(b) = &baseline {
            if !b.is_file() {
                bail!("PROXY_BENCH_BASELINE={} is not a file", b.display());
            }
        }
        let write = perf.is_none() && var("PROXY_BENCH_WRITE").as_deref() != Some("0");
        let only = var("PROXY_BENCH_ONLY").map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        Ok(Settings {
            duration,
            runs,
            connections,
            pin,
            only,
            // Rows of another binary are not the figures of this commit.
            write: write && baseline.is_none(),
            perf,
            baseline,
        })
    }

    /// The command that reproduces this run: the knobs that differ from
    /// their defaults, then `cargo bench --bench proxy`.
    pub fn command(&self) -> String {
        let mut env = Vec::new();
        if self.duration != Duration::from_secs(10) {
            env.push(format!("PROXY_BENCH_DURATION={}s", self.duration.as_secs()));
        }
        if self.runs != 3 {
            env.push(format!("PROXY_BENCH_RUNS={}", self.runs));
        }
        if self.connections != 32 {
            env.push(format!("PROXY_BENCH_CONNECTIONS={}", self.connections));
        }
        if self.pin.is_none() {
            env.push("PROXY_BENCH_PIN=off".into());
        }
        if let Some(o) = &self.only {
            env.push(format!("PROXY_BENCH_ONLY={}", o.join(",")));
        }
        env.push("cargo bench --bench proxy".into());
        env.join(" ")
    }

    pub fn wrk_args(&self) -> String {
        format!(
            "wrk -t1 -c{} -d{}s --latency",
            self.connections,
            self.duration.as_secs()
        )
    }
}
