//! CPU and memory of a process, read from its own `/proc` entry: the bench
//! measures the coordinator (or etcd) from outside, the way an operator's
//! `top` would, so what it reports includes everything the process pays
//! for (runtime, allocator, logging), not what the code thinks it costs.

use super::error::BenchError;
use serde::Serialize;
use std::time::Instant;

/// Clock ticks per second in `/proc/<pid>/stat`. Linux exposes CPU times in
/// USER_HZ, which is 100 on every architecture it supports.
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    at: Instant,
    /// utime + stime, in ticks.
    cpu_ticks: u64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub threads: u64,
}

/// One reading of the whole machine (`/proc/stat`), to show how busy the
/// other tenants were while a figure was taken.
#[derive(Debug, Clone, Copy)]
pub struct MachineSample {
    at: Instant,
    busy_ticks: u64,
}

/// CPU and memory over a window.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Usage {
    /// Cores used on average over the window (1.0 = one core all the time).
    pub cores: f64,
    /// Resident memory at the end of the window, in KiB.
    pub rss_kib: u64,
    /// Highest resident memory the process ever had, in KiB.
    pub peak_rss_kib: u64,
    pub seconds: f64,
}

pub fn sample(pid: u32) -> Result<ProcSample, BenchError> {
    let err = |source| BenchError::Proc { pid, source };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(err)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(err)?;
    let at = Instant::now();
    // The command name (field 2) may hold spaces; fields after its ')' are fixed.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is index 0, so utime (field 14) is index 11, stime index 12.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        at,
        cpu_ticks: tick(11) + tick(12),
        rss_kib: kib("VmRSS:"),
        peak_rss_kib: kib("VmHWM:"),
        threads: kib("Threads:"),
    })
}

pub fn usage(start: &ProcSample, end: &ProcSample) -> Usage {
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    let cpu = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / USER_HZ;
    Usage {
        cores: if seconds > 0.0 { cpu / seconds } else { 0.0 },
        rss_kib: end.rss_kib,
        peak_rss_kib: end.peak_rss_kib,
        seconds,
    }
}

pub fn machine() -> MachineSample {
    let at = Instant::now();
    let busy_ticks = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal ...
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some(total.saturating_sub(idle))
        })
        .unwrap_or(0);
    MachineSample { at, busy_ticks }
}

/// Cores busy machine-wide over a window (everything: the measured process,
/// the bench, and whatever else runs on the machine).
pub fn machine_cores(start: &MachineSample, end: &MachineSample) -> f64 {
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    end.busy_ticks.saturating_sub(start.busy_ticks) as f64 / USER_HZ / seconds
}

/// A window being measured on one process, the bench itself and the machine.
pub struct Window {
    pid: Option<u32>,
    target: Option<ProcSample>,
    bench: Option<ProcSample>,
    machine: MachineSample,
}

/// What a window measured.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct WindowUsage {
    /// The measured process (coordinator or etcd), when its pid is known.
    pub target: Option<Usage>,
    /// The bench process (the simulated clients).
    pub bench_cores: f64,
    /// The whole machine, other tenants included.
    pub machine_cores: f64,
}

impl Window {
    pub fn start(pid: Option<u32>) -> Self {
        Window {
            pid,
            target: pid.and_then(|p| sample(p).ok()),
            bench: sample(std::process::id()).ok(),
            machine: machine(),
        }
    }

    pub fn finish(self) -> WindowUsage {
        let target = match (self.pid, self.target) {
            (Some(p), Some(s)) => sample(p).ok().map(|e| usage(&s, &e)),
            _ => None,
        };
        let bench_cores = match (self.bench, sample(std::process::id()).ok()) {
            (Some(s), Some(e)) => usage(&s, &e).cores,
            _ => 0.0,
        };
        WindowUsage {
            target,
            bench_cores,
            machine_cores: machine_cores(&self.machine, &machine()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let a = sample(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let b = sample(std::process::id()).unwrap();
        assert!(a.rss_kib > 0 && b.peak_rss_kib >= b.rss_kib / 2);
        assert!(usage(&a, &b).cores >= 0.0);
        assert!(sample(u32::MAX).is_err());
    }
}
