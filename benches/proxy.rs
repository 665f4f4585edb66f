//! `cargo bench --bench proxy`: HTTP load through every data path in one
//! run, with one load generator (wrk) and one backend process.
//!
//! | path | what carries a request |
//! | --- | --- |
//! | `backend` | wrk -> backend (the baseline every ratio is taken against) |
//! | `nginx` | wrk -> nginx (reverse proxy, upstream keepalive) -> backend |
//! | `nginx-tls` | the same, wrk speaking HTTPS to nginx (`listen ... ssl`) |
//! | `rathole` | wrk -> rathole server -> rathole client (reverse tunnel) -> backend |
//! | `edgeplane direct` | wrk -> coordinator -> backend (the coordinator dials it) |
//! | `edgeplane direct, TLS` | the same, wrk speaking HTTPS to a coordinator started with `--tls-cert/--tls-key` |
//! | `edgeplane direct, proxy metrics off` | the same, with `--no-proxy-metrics` (no `edgeplane_proxy_*` counting) |
//! | `edgeplane direct, fast path off` | the same, with `--no-http1-fast-path` (hyper serves the request) |
//! | `edgeplane tunnel` | wrk -> coordinator -> HTTP/2 in the worker's gRPC tunnel -> worker -> backend |
//! | `edgeplane tunnel, fast path off` | the same, with `--no-http1-fast-path` |
//!
//! Fairness: every path gets the same wrk settings, and by default wrk is
//! pinned to CPU 0 while everything on the server side (backend, nginx,
//! rathole, coordinator, workers) shares CPU 1, so each proxy competes with
//! the same backend for the same single core and never with the load
//! generator. nginx runs `worker_processes 1` and the tokio programs see one
//! CPU (one runtime worker) for the same reason. Paths run round-robin,
//! `runs` rounds, and each figure is the median over rounds.
//!
//! Knobs (environment): `PROXY_BENCH_DURATION` (10s), `PROXY_BENCH_RUNS` (3),
//! `PROXY_BENCH_CONNECTIONS` (32), `PROXY_BENCH_PIN` (`on`|`off`),
//! `PROXY_BENCH_ONLY` (comma-separated path keys, e.g. `backend,direct`),
//! `PROXY_BENCH_WRITE` (`1` writes the results into BENCHMARKS.md; `0` only
//! prints), `PROXY_BENCH_BASELINE` (another edgeplane binary, e.g. the
//! previous commit's: its direct and tunnel paths run as extra rows in the
//! same rounds; implies no write), `PROXY_BENCH_PERF` (a directory: `perf record` every server-side
//! process of each path during its first measured run; implies no write).
//!
//! The bench re-runs its own executable as the backend (so the backend is a
//! separate process that can be pinned like the others).
//!
//! The two TLS rows serve one certificate for 127.0.0.1 that the bench makes
//! at start ([`tls`]); wrk keeps its connections for the whole run, so they
//! measure steady-state TLS (records), not handshakes. A shorter run for a
//! busy machine: `PROXY_BENCH_DURATION=5s PROXY_BENCH_RUNS=1` (then not
//! comparable with the default run's figures).

//!
//! Layout: [`settings`] (the knobs), [`tools`] (finding wrk, nginx,
//! rathole), [`backend`] (the backend this executable turns into), [`tls`]
//! (the TLS rows' certificate, and HTTPS readiness probes),
//! [`processes`] and [`fleet`] (starting every path's processes),
//! [`measure`] (wrk and CPU sampling), [`report`] (the table and the
//! BENCHMARKS.md section). The `/proc` reading and the child processes are
//! the crate's own ([`edgeplane::bench::procfs`], [`edgeplane::bench::child`]).

#[path = "proxy/backend.rs"]
mod backend;
#[path = "proxy/fleet.rs"]
mod fleet;
#[path = "proxy/measure.rs"]
mod measure;
#[path = "proxy/processes.rs"]
mod processes;
#[path = "proxy/report.rs"]
mod report;
#[path = "proxy/settings.rs"]
mod settings;
#[path = "proxy/tls.rs"]
mod tls;
#[path = "proxy/tools.rs"]
mod tools;

use anyhow::{bail, Result};
use measure::{busy_before_start, measure, summarize, wrk, Sample, Summary};
use report::{fmt_us, load_average, machine, write_section, Report, SECTION};
use settings::Settings;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use tools::{find_tools, sh};

/// Warm-up of each path before it is measured.
const WARMUP: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    if let Ok(addr) = std::env::var(backend::ENV) {
        return backend::run(&addr);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let s = Settings::from_env()?;
    let tools = find_tools(&s)?;
    let dir = tempfile::Builder::new().prefix("edgeplane-proxy-bench").tempdir()?;
    // nginx workers may run as another user; they must reach their files.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let load_before = load_average();
    let busy_before = busy_before_start();
    eprintln!("proxy bench: load average {load_before}; {busy_before}");
    eprintln!(
        "proxy bench: starting backend, proxies, coordinators and workers in {}",
        dir.path().display()
    );
    let fleet = fleet::start(&s, &tools, dir.path()).await?;
    if let Some(p) = &s.perf {
        std::fs::create_dir_all(p)?;
    }

    for t in &fleet.targets {
        eprintln!("proxy bench: warm-up {} ({})", t.label, t.url);
        wrk(&s, &tools, &t.url, WARMUP).await?;
    }
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for round in 0..s.runs {
        for t in &fleet.targets {
            let perf_dir = if round == 0 { s.perf.as_deref() } else { None };
            let sample = measure(&s, &tools, t, perf_dir).await?;
            eprintln!(
                "proxy bench: round {}/{} {:<38} {:>9.0} req/s  p50 {:>9}  p99 {:>9}  cpu {:.1} µs/req{}",
                round + 1,
                s.runs,
                t.label,
                sample.rps,
                fmt_us(sample.p50_us),
                fmt_us(sample.p99_us),
                sample.cpu_us_per_req,
                if sample.errors > 0 {
                    format!("  ({} errors)", sample.errors)
                } else {
                    String::new()
                }
            );
            samples.entry(t.key).or_default().push(sample);
        }
    }
    let rows: Vec<Summary> = fleet.targets.iter().map(|t| summarize(t, &samples[t.key])).collect();
    drop(fleet);

    let dirty = !sh(
        "git",
        &["-C", env!("CARGO_MANIFEST_DIR"), "status", "--porcelain", "--", "src"],
    )
    .is_empty();
    let commit = format!(
        "{}{}",
        sh(
            "git",
            &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]
        ),
        if dirty {
            " (with uncommitted changes in src/)"
        } else {
            ""
        }
    );
    let report = Report {
        settings: &s,
        machine: machine(&tools),
        commit,
        load_before,
        load_after: load_average(),
        busy_before,
        rows,
    };
    let md = report.markdown();
    println!("\n{SECTION}\n\n{md}");
    if s.write {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
        write_section(&path, &md)?;
        eprintln!("proxy bench: results written to {}", path.display());
    } else {
        eprintln!("proxy bench: BENCHMARKS.md left alone (PROXY_BENCH_WRITE=0 or PROXY_BENCH_PERF set)");
    }
    if let Some(p) = &s.perf {
        eprintln!(
            "proxy bench: perf data in {} (perf report -i FILE --no-children)",
            p.display()
        );
    }
    let errors: u64 = report.rows.iter().map(|r| r.errors).sum();
    if errors > 0 {
        bail!("{errors} requests failed (non-2xx or socket errors); the figures above are suspect");
    }
    Ok(())
}
