//! The results as markdown (the table, the targets met or missed, the
//! conditions of the run) and their section of BENCHMARKS.md.

use super::measure::Summary;
use super::settings::Settings;
use super::tools::{rathole_version, sh, version, Tools};
use super::WARMUP;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

pub const SECTION: &str = "## Proxy: direct, tunnel, nginx, rathole";
const BEGIN: &str =
    "<!-- proxy-bench:begin (written by `cargo bench --bench proxy`; text outside the markers is kept) -->";
const END: &str = "<!-- proxy-bench:end -->";

pub fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

pub fn table(rows: &[Summary]) -> String {
    let base = rows.iter().find(|r| r.key == "backend").expect("backend row");
    let mut t = String::from(
        "| path | req/s | vs backend | p50 | vs backend | p99 | vs backend | server CPU per request | CPU busy (wrk / servers) | TCP accepts per run | req/s per round |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for r in rows {
        let busy = r
            .busy
            .map_or("-".into(), |(w, s)| format!("{:.0}% / {:.0}%", w * 100.0, s * 100.0));
        let rounds: Vec<String> = r.all_rps.iter().map(|v| format!("{v:.0}")).collect();
        let errors = if r.errors > 0 {
            format!(" ({} errors)", r.errors)
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "| {}{} | {:.0} | {:.2}x | {} | {:.2}x | {} | {:.2}x | {:.1} µs | {} | {:.0} | {} |",
            r.label,
            errors,
            r.rps,
            r.rps / base.rps,
            fmt_us(r.p50_us),
            r.p50_us / base.p50_us,
            fmt_us(r.p99_us),
            r.p99_us / base.p99_us,
            r.cpu_us_per_req,
            busy,
            r.accepted,
            rounds.join(", ")
        );
    }
    t
}

pub fn verdicts(rows: &[Summary]) -> Vec<String> {
    let get = |k: &str| rows.iter().find(|r| r.key == k);
    let mut v = Vec::new();
    let mark = |ok: bool| if ok { "met" } else { "**missed**" };
    for (ours, theirs, what) in [("direct", "nginx", ""), ("direct-tls", "nginx-tls", ", TLS")] {
        if let (Some(d), Some(n)) = (get(ours), get(theirs)) {
            v.push(format!(
                "- edgeplane direct{what} at least as fast as nginx{what}: {} ({:.0} vs {:.0} req/s, {:.2}x nginx)",
                mark(d.rps >= n.rps),
                d.rps,
                n.rps,
                d.rps / n.rps
            ));
            v.push(format!(
                "- edgeplane direct{what} p99 no worse than nginx{what}: {} ({} vs {})",
                mark(d.p99_us <= n.p99_us),
                fmt_us(d.p99_us),
                fmt_us(n.p99_us)
            ));
        }
    }
    for (plain, tls, what) in [
        ("direct", "direct-tls", "edgeplane direct"),
        ("nginx", "nginx-tls", "nginx"),
    ] {
        if let (Some(p), Some(t)) = (get(plain), get(tls)) {
            v.push(format!(
                "- what TLS costs {what} (steady state, connections kept): {:.2}x the plaintext throughput, p99 {} vs {}, {:.1} vs {:.1} µs of server CPU per request",
                t.rps / p.rps,
                fmt_us(t.p99_us),
                fmt_us(p.p99_us),
                t.cpu_us_per_req,
                p.cpu_us_per_req
            ));
        }
    }
    for (fast, off, what) in [
        ("direct", "direct-hyper", "the HTTP/1 fast path, direct mode"),
        (
            "tunnel",
            "tunnel-hyper",
            "the HTTP/1 fast path, tunnel mode (raw pipes)",
        ),
    ] {
        if let (Some(f), Some(h)) = (get(fast), get(off)) {
            v.push(format!(
                "- {what}, against the same coordinator with it off: {:.2}x the throughput, p99 {} vs {}",
                f.rps / h.rps,
                fmt_us(f.p99_us),
                fmt_us(h.p99_us)
            ));
        }
    }
    if let (Some(on), Some(off)) = (get("direct"), get("direct-nometrics")) {
        v.push(format!(
            "- what counting proxied requests costs (metrics on against `--no-proxy-metrics`, same binary): {} ({:.3}x the throughput, target at least 0.97x; p99 {} vs {}; {:.1} vs {:.1} µs of server CPU per request)",
            mark(on.rps >= 0.97 * off.rps),
            on.rps / off.rps,
            fmt_us(on.p99_us),
            fmt_us(off.p99_us),
            on.cpu_us_per_req,
            off.cpu_us_per_req
        ));
    }
    if let (Some(t), Some(r)) = (get("tunnel"), get("rathole")) {
        v.push(format!(
            "- edgeplane tunnel at least as fast as rathole: {} ({:.0} vs {:.0} req/s, {:.2}x rathole)",
            mark(t.rps >= r.rps),
            t.rps,
            r.rps,
            t.rps / r.rps
        ));
    }
    v
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn machine(tools: &Tools) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    format!(
        "{cpus} × {model}, {:.1} GiB RAM, Linux {}; {}; {}; {}; {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim(),
        version(&tools.wrk, &["-v"]).split(" [").next().unwrap_or("wrk ?"),
        version(&tools.nginx, &["-v"]).replace("nginx version: ", ""),
        rathole_version(&tools.rathole),
        sh("rustc", &["--version"]),
    )
}

pub struct Report<'a> {
    pub settings: &'a Settings,
    pub machine: String,
    pub commit: String,
    pub load_before: String,
    pub load_after: String,
    pub busy_before: String,
    pub rows: Vec<Summary>,
}

impl Report<'_> {
    pub fn markdown(&self) -> String {
        let s = self.settings;
        let mut m = String::new();
        let _ = writeln!(m, "Command: `{}`  ", s.command());
        let _ = writeln!(
            m,
            "Load: `{} --timeout 5s URL` per path and round; {} round(s) of every path, round-robin, after a {}s warm-up each; figures are medians over rounds.  ",
            s.wrk_args(),
            s.runs,
            WARMUP.as_secs()
        );
        let pin = match s.pin {
            Some((w, srv)) => format!(
                "wrk pinned to CPU {w}; backend, nginx, rathole, coordinator and workers all pinned to CPU {srv} (`taskset`), so every proxy shares one core with the same backend and none competes with the load generator; nginx `worker_processes 1`, the tokio programs see one CPU"
            ),
            None => "no pinning (PROXY_BENCH_PIN=off)".into(),
        };
        let _ = writeln!(m, "CPU: {pin}.  ");
        let _ = writeln!(m, "Machine: {}.  ", self.machine);
        let _ = writeln!(m, "Code: edgeplane {}, release build.  ", self.commit);
        let _ = writeln!(
            m,
            "Conditions: load average {} before, {} after; {}.",
            self.load_before, self.load_after, self.busy_before
        );
        m.push('\n');
        m.push_str(&table(&self.rows));
        m.push('\n');
        m.push_str(
            "`vs backend`: req/s as a share of the backend's, latencies as a multiple of the backend's. \
             `server CPU per request`: CPU time of the backend plus the path's proxy processes, per request. \
             `CPU busy`: share of each pinned core in use during the run. \
             `TCP accepts per run`: connections the kernel accepted during one measured run (machine-wide `PassiveOpens`): \
             wrk's connections, plus any a proxy opens to the backend and the edgeplane workers' readiness probes of the backend (one connection each, every 500 ms); a number near the request count would mean connections were not reused.\n\n",
        );
        if self.rows.iter().any(|r| r.key.ends_with("-tls")) {
            let _ = writeln!(
                m,
                "TLS rows: wrk to `https://127.0.0.1:PORT/...`; nginx (`listen ... ssl`) and the coordinator (`--tls-cert/--tls-key`) serve the same \
                 ECDSA P-256 certificate and key, made by the bench with the crate's cluster CA; the proxy to backend hop stays plain HTTP, nginx's \
                 with the same upstream keepalive as the plain nginx row. wrk keeps its {} connections open for the whole run (HTTP/1.1 keep-alive, \
                 see `TCP accepts per run`), so each run has {} handshakes and the figures are steady-state TLS: record encryption and decryption, \
                 not handshake cost.\n",
                s.connections, s.connections
            );
        }

        let v = verdicts(&self.rows);
        if !v.is_empty() {
            m.push_str("Targets:\n\n");
            for line in v {
                m.push_str(&line);
                m.push('\n');
            }
        }
        m
    }
}

/// Puts `block` between the markers of our section, creating the file or
/// the section as needed; every other byte of the file is kept. Read right
/// before the write, because another bench writes its own section of the
/// same file.
pub fn write_section(path: &Path, block: &str) -> Result<()> {
    let fenced = format!("{BEGIN}\n{block}{END}");
    let current = match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let next = match current {
        None => format!("# Benchmarks\n\n{SECTION}\n\n{fenced}\n"),
        Some(text) => match (text.find(BEGIN), text.find(END)) {
            (Some(b), Some(e)) if e > b => format!("{}{fenced}{}", &text[..b], &text[e + END.len()..]),
            _ => match text.find(&format!("{SECTION}\n")) {
                Some(i) => {
                    let at = i + SECTION.len() + 1;
                    format!("{}\n{fenced}\n{}", &text[..at], &text[at..])
                }
                None => {
                    let sep = if text.ends_with("\n\n") {
                        ""
                    } else if text.ends_with('\n') {
                        "\n"
                    } else {
                        "\n\n"
                    };
                    format!("{text}{sep}{SECTION}\n\n{fenced}\n")
                }
            },
        },
    };
    std::fs::write(path, next).with_context(|| format!("writing {}", path.display()))
}
