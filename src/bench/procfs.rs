//! CPU and memory of a process, read from its own `/proc` entry: the bench
//! measures the coordinator (or etcd) from outside, the way an operator's
//! `top` would, so what it reports includes everything the process pays
//! for (runtime, allocator, logging), not what the code thinks it costs.

use super::error::BenchError;
use serde::Serialize;
use std::time::Instant;

/// Clock ticks per second in `/proc/<pid>/stat` and `/proc/stat`: the
/// kernel's USER_HZ, as it tells every process in the `AT_CLKTCK` entry of
/// its auxiliary vector (where glibc's `sysconf(_SC_CLK_TCK)`, and so
/// `getconf CLK_TCK`, read it). 100 on most architectures but not all
/// (1024 on alpha), hence read rather than assumed; 100 if `/proc/self/auxv`
/// cannot be read.
pub fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        const AT_CLKTCK: usize = 17;
        const WORD: usize = std::mem::size_of::<usize>();
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().expect("one word"));
        auxv.chunks_exact(2 * WORD)
            .map(|e| (word(&e[..WORD]), word(&e[WORD..])))
            .find(|&(key, value)| key == AT_CLKTCK && value > 0)
            .map_or(100.0, |(_, hz)| hz as f64)
    })
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    at: Instant,
    /// utime + stime, in ticks.
    cpu_ticks: u64,
    pub rss_kib: u64,
    /// The anonymous part of `rss_kib` (heap and stacks): what a leak grows.
    /// The rest is mostly the binary's own pages, read in from the file as
    /// code paths first run, which the kernel may drop and read again.
    pub rss_anon_kib: u64,
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
    let kib = |key: &str| status_field(&status, key).unwrap_or(0);
    Ok(ProcSample {
        at,
        cpu_ticks: stat_ticks(&stat),
        rss_kib: kib("VmRSS:"),
        rss_anon_kib: kib("RssAnon:"),
        peak_rss_kib: kib("VmHWM:"),
        threads: kib("Threads:"),
    })
}

/// The number after `key` (`VmRSS:`, `Threads:`) in a `/proc/PID/status` text.
pub fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
}

/// Open file descriptors of a process: the entries of `/proc/PID/fd`.
pub fn fd_count(pid: u32) -> Result<u64, BenchError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|source| BenchError::Proc { pid, source })?;
    Ok(dir.filter(|e| e.is_ok()).count() as u64)
}

/// The three load averages of a `/proc/loadavg` line.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// The fields of a `stat` line after the command name (field 2, which may
/// hold spaces and parentheses): index 0 is the state (field 3).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect()
}

/// utime + stime (fields 14 and 15) of a `stat` line, in ticks.
fn stat_ticks(stat: &str) -> u64 {
    let fields = stat_fields(stat);
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    tick(11) + tick(12)
}

pub fn usage(start: &ProcSample, end: &ProcSample) -> Usage {
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    let cpu = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / clock_ticks_per_second();
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
        .and_then(|s| Some(cpu_line(s.lines().next()?).busy))
        .unwrap_or(0);
    MachineSample { at, busy_ticks }
}

/// The ticks of one CPU (or of all, for the `cpu` line) in `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTicks {
    /// Every state but idle and iowait.
    pub busy: u64,
    pub total: u64,
}

/// `cpu0 user nice system idle iowait irq softirq steal ...`
fn cpu_line(line: &str) -> CpuTicks {
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    CpuTicks {
        busy: total.saturating_sub(idle),
        total,
    }
}

/// Each CPU's ticks (`cpu0`, `cpu1`, ... in `/proc/stat`), in CPU order.
pub fn per_cpu() -> Vec<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(cpu_line)
        .collect()
}

/// Share of a CPU in use between two readings (0.0 to 1.0).
pub fn busy_share(start: &CpuTicks, end: &CpuTicks) -> f64 {
    let total = end.total.saturating_sub(start.total).max(1) as f64;
    end.busy.saturating_sub(start.busy) as f64 / total
}

/// CPU time a process (all its threads) has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|source| BenchError::Proc { pid, source })?;
    Ok(stat_ticks(&stat) as f64 / clock_ticks_per_second())
}

/// The parent of a process (field 4 of its `stat`), if it still runs.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).get(1)?.parse().ok()
}

/// Every process on the machine (as far as this one can see).
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// The processes whose parent is `parent` (nginx's workers, say).
pub fn children_of(parent: u32) -> Vec<u32> {
    pids().into_iter().filter(|p| parent_of(*p) == Some(parent)).collect()
}

/// Cores busy machine-wide over a window (everything: the measured process,
/// the bench, and whatever else runs on the machine).
pub fn machine_cores(start: &MachineSample, end: &MachineSample) -> f64 {
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    end.busy_ticks.saturating_sub(start.busy_ticks) as f64 / clock_ticks_per_second() / seconds
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
    fn parses_status_loadavg_and_stat() {
        let status = "Name:\tedgeplane\nVmHWM:\t   70312 kB\nVmRSS:\t   66120 kB\nThreads:\t3\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(66120));
        assert_eq!(status_field(status, "VmHWM:"), Some(70312));
        assert_eq!(status_field(status, "Threads:"), Some(3));
        assert_eq!(status_field(status, "VmSwap:"), None);
        assert_eq!(parse_loadavg("0.52 1.10 0.97 2/431 12345\n"), Some([0.52, 1.10, 0.97]));
        assert_eq!(parse_loadavg("0.52 x"), None);
        // A command name with spaces and parentheses does not shift the fields.
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 10 0 0";
        assert_eq!(stat_ticks(stat), 300);
        assert_eq!(stat_fields(stat).get(1), Some(&"1"));
    }

    #[test]
    fn counts_open_files() {
        let me = std::process::id();
        let before = fd_count(me).unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(fd_count(me).unwrap() >= 1 && before >= 1);
        drop(f);
        assert!(fd_count(u32::MAX).is_err());
    }

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
        assert!(a.rss_anon_kib > 0 && a.rss_anon_kib <= a.rss_kib);
        assert!(usage(&a, &b).cores >= 0.0);
        assert!(sample(u32::MAX).is_err());
    }

    #[test]
    fn finds_parents_children_and_cpus() {
        let me = std::process::id();
        let parent = parent_of(me).expect("a parent");
        assert!(children_of(parent).contains(&me));
        assert!(pids().contains(&me) && pids().contains(&parent));
        assert!(cpu_seconds(me).unwrap() >= 0.0 && cpu_seconds(u32::MAX).is_err());
        let cpus = per_cpu();
        assert!(!cpus.is_empty());
        assert!(cpus.iter().all(|c| c.busy <= c.total));
        let share = busy_share(&CpuTicks::default(), &cpus[0]);
        assert!((0.0..=1.0).contains(&share));
    }

    /// The tick rate against two independent sources: what `getconf` says
    /// (through libc), and the nanosecond CPU clock of `schedstat` over a
    /// busy loop, which a wrong rate would put off by a factor of 2.5 or more.
    #[test]
    fn clock_tick_matches_getconf_and_the_cpu_clock() {
        let hz = clock_ticks_per_second();
        if let Some(getconf) = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        {
            assert_eq!(hz, getconf, "getconf CLK_TCK");
        }
        // This thread only: other tests run in parallel in this process.
        let ticks = || stat_ticks(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        let cpu_ns = || -> Option<u64> {
            let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
            s.split_whitespace().next()?.parse().ok()
        };
        let (t0, n0) = (ticks(), cpu_ns());
        let Some(n0) = n0 else {
            return; // no schedstat in this kernel
        };
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_ns().is_some_and(|n| n - n0 < 500_000_000) && Instant::now() < deadline {
            for i in 0..100_000u64 {
                x = x.wrapping_add(std::hint::black_box(i * i));
            }
        }
        assert!(x > 0);
        let (t1, n1) = (ticks(), cpu_ns().unwrap());
        if n1 - n0 < 500_000_000 {
            return; // starved of CPU for 20 s: nothing to compare
        }
        let by_ticks = (t1 - t0) as f64 / hz;
        let by_clock = (n1 - n0) as f64 / 1e9;
        let ratio = by_ticks / by_clock;
        assert!(
            (0.6..1.6).contains(&ratio),
            "{} ticks at {hz}/s = {by_ticks:.3}s of CPU, schedstat says {by_clock:.3}s",
            t1 - t0
        );
    }
}
