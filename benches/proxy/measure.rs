//! One measured run of a path (wrk, with the servers' CPU time and each
//! pinned core's busy share around it), the medians over rounds, and how
//! busy the machine was before the start.

use super::fleet::Target;
use super::settings::Settings;
use super::tools::Tools;
use anyhow::{anyhow, bail, Result};
use edgeplane::bench::procfs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    /// Non-2xx responses plus socket errors.
    pub errors: u64,
    /// Server-side CPU seconds per request, in microseconds.
    pub cpu_us_per_req: f64,
    /// Busy share of (wrk's CPU, the servers' CPU), when pinned.
    pub busy: Option<(f64, f64)>,
    /// TCP connections accepted on the machine during the run (the
    /// kernel's `PassiveOpens`): about wrk's connections plus a proxy's
    /// pool and the workers' probes when connections are kept alive, about
    /// the request count
    /// if connections were not reused (and each TLS one handshaken anew).
    pub accepted: u64,
}

/// The kernel's count of accepted TCP connections (`Tcp: PassiveOpens` in
/// `/proc/net/snmp`), machine-wide.
pub fn passive_opens() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "PassiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `1.23ms`, `456.00us`, `1.02s`, `2.00m` -> microseconds.
pub fn parse_latency(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let mult = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * mult)
}

pub fn parse_wrk(out: &str) -> Result<Sample> {
    let mut s = Sample::default();
    let (mut p50, mut p99, mut rps) = (None, None, None);
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => p50 = parse_latency(v),
            ["99%", v] => p99 = parse_latency(v),
            ["Requests/sec:", v] => rps = v.parse().ok(),
            [n, "requests", "in", ..] => s.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => s.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                s.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    s.p50_us = p50.ok_or_else(|| anyhow!("no 50% line in wrk output:\n{out}"))?;
    s.p99_us = p99.ok_or_else(|| anyhow!("no 99% line in wrk output:\n{out}"))?;
    s.rps = rps.ok_or_else(|| anyhow!("no Requests/sec line in wrk output:\n{out}"))?;
    Ok(s)
}

pub async fn wrk(s: &Settings, tools: &Tools, url: &str, duration: Duration) -> Result<String> {
    let mut cmd = match (s.pin, &tools.taskset) {
        (Some((cpu, _)), Some(taskset)) => {
            let mut c = Command::new(taskset);
            c.arg("-c").arg(cpu.to_string()).arg(&tools.wrk);
            c
        }
        _ => Command::new(&tools.wrk),
    };
    cmd.args([
        "-t1".to_string(),
        format!("-c{}", s.connections),
        format!("-d{}s", duration.as_secs()),
        "--latency".into(),
        "--timeout".into(),
        "5s".into(),
        url.to_string(),
    ])
    .stdin(Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(duration + Duration::from_secs(15), cmd.output())
        .await
        .map_err(|_| anyhow!("wrk did not finish in time"))??;
    if !out.status.success() {
        bail!("wrk failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn measure(s: &Settings, tools: &Tools, t: &Target, perf_run: Option<&Path>) -> Result<Sample> {
    let perf = match (perf_run, &tools.perf) {
        (Some(dir), Some(perf)) => {
            let pids: Vec<String> = t.pids.iter().map(u32::to_string).collect();
            let out = dir.join(format!("perf-{}.data", t.key));
            let mut cmd = Command::new(perf);
            cmd.args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-o"])
                .arg(&out)
                .args(["-p", &pids.join(",")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            Some(cmd.spawn()?)
        }
        _ => None,
    };
    let cpu_seconds = || -> f64 { t.pids.iter().map(|p| procfs::cpu_seconds(*p).unwrap_or(0.0)).sum() };
    let cpu_before = cpu_seconds();
    let cpus_before = procfs::per_cpu();
    let opens_before = passive_opens();
    let out = wrk(s, tools, &t.url, s.duration).await?;
    let opens_after = passive_opens();
    let cpus_after = procfs::per_cpu();
    let cpu_after = cpu_seconds();
    if let Some(mut p) = perf {
        if let Some(pid) = p.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), p.wait()).await;
    }
    let mut sample = parse_wrk(&out)?;
    sample.accepted = opens_after.saturating_sub(opens_before);
    let cpu_s = (cpu_after - cpu_before).max(0.0);
    sample.cpu_us_per_req = if sample.requests > 0 {
        cpu_s * 1e6 / sample.requests as f64
    } else {
        0.0
    };
    sample.busy = s.pin.map(|(w, srv)| {
        let share = |i: usize| match (cpus_before.get(i), cpus_after.get(i)) {
            (Some(a), Some(b)) => procfs::busy_share(a, b),
            _ => 0.0,
        };
        (share(w), share(srv))
    });
    Ok(sample)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub struct Summary {
    pub label: &'static str,
    pub key: &'static str,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_req: f64,
    pub busy: Option<(f64, f64)>,
    pub errors: u64,
    pub all_rps: Vec<f64>,
    /// Median of the runs' accepted TCP connections.
    pub accepted: f64,
}

pub fn summarize(t: &Target, samples: &[Sample]) -> Summary {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Summary {
        label: t.label,
        key: t.key,
        rps: m(|s| s.rps),
        p50_us: m(|s| s.p50_us),
        p99_us: m(|s| s.p99_us),
        cpu_us_per_req: m(|s| s.cpu_us_per_req),
        busy: samples[0]
            .busy
            .map(|_| (m(|s| s.busy.unwrap_or_default().0), m(|s| s.busy.unwrap_or_default().1))),
        errors: samples.iter().map(|s| s.errors).sum(),
        all_rps: samples.iter().map(|s| s.rps).collect(),
        accepted: m(|s| s.accepted as f64),
    }
}

/// What else the machine was doing just before the run: each CPU's busy
/// share over one second, and the processes with the most CPU time in that
/// second (this bench and the cargo that started it left out).
pub fn busy_before_start() -> String {
    let ours = ancestors();
    let per_process = |pids: &[u32]| -> Vec<(u32, f64)> {
        pids.iter()
            .map(|p| (*p, procfs::cpu_seconds(*p).unwrap_or(0.0)))
            .collect()
    };
    let all: Vec<u32> = procfs::pids().into_iter().filter(|p| !ours.contains(p)).collect();
    let (cpus0, procs0) = (procfs::per_cpu(), per_process(&all));
    std::thread::sleep(Duration::from_secs(1));
    let (cpus1, procs1) = (procfs::per_cpu(), per_process(&all));
    let cores: Vec<String> = cpus0
        .iter()
        .zip(&cpus1)
        .map(|(a, b)| format!("{:.0}%", procfs::busy_share(a, b) * 100.0))
        .collect();
    // CPU seconds in that second, per process.
    let mut busiest: Vec<(f64, u32)> = procs0
        .iter()
        .zip(&procs1)
        .map(|((pid, t0), (_, t1))| (t1 - t0, *pid))
        .filter(|(d, _)| *d > 0.0)
        .collect();
    busiest.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
    let names: Vec<String> = busiest
        .iter()
        .take(3)
        .map(|(seconds, pid)| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{} {:.0}%", comm.trim(), seconds * 100.0)
        })
        .collect();
    format!(
        "CPU busy {} (per core) in the second before the start; busiest then: {}",
        cores.join(" / "),
        if names.is_empty() {
            "nothing".into()
        } else {
            names.join(", ")
        }
    )
}

/// This process and the ones that started it (cargo, the shell).
pub fn ancestors() -> Vec<u32> {
    let mut out = vec![std::process::id()];
    while let Some(&pid) = out.last() {
        match procfs::parent_of(pid) {
            Some(p) if p > 1 && !out.contains(&p) => out.push(p),
            _ => break,
        }
    }
    out
}
