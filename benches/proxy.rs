//! `cargo bench --bench proxy`: HTTP load through five data paths in one
//! run, with one load generator (wrk) and one backend process.
//!
//! | path | what carries a request |
//! | --- | --- |
//! | `backend` | wrk -> backend (the baseline every ratio is taken against) |
//! | `nginx` | wrk -> nginx (reverse proxy, upstream keepalive) -> backend |
//! | `rathole` | wrk -> rathole server -> rathole client (reverse tunnel) -> backend |
//! | `edgeplane direct` | wrk -> coordinator -> backend (the coordinator dials it) |
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
//! prints), `PROXY_BENCH_PERF` (a directory: `perf record` every server-side
//! process of each path during its first measured run; implies no write).
//!
//! The bench re-runs its own executable as the backend (so the backend is a
//! separate process that can be pinned like the others).

use anyhow::{anyhow, bail, Context, Result};
use edgeplane::bench::child::{self, ChildServer, SpawnOptions};
use edgeplane::bench::procfs;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Set (to a listen address) when this executable runs as the backend.
const BACKEND_ENV: &str = "EDGEPLANE_PROXY_BENCH_BACKEND";
/// What the backend answers on every path but `/health`.
const BODY: &[u8] = b"edgeplane proxy bench: a small fixed body, 64 bytes long.......\n";
const SECTION: &str = "## Proxy: direct, tunnel, nginx, rathole";
const BEGIN: &str =
    "<!-- proxy-bench:begin (written by `cargo bench --bench proxy`; text outside the markers is kept) -->";
const END: &str = "<!-- proxy-bench:end -->";
/// Longest wait for any process to come up.
const STARTUP: Duration = Duration::from_secs(30);
const WARMUP: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    if let Ok(addr) = std::env::var(BACKEND_ENV) {
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

/// The fast backend: HTTP/1.1 with keep-alive, one thread, `/health` and a
/// fixed body everywhere else. It exits when its stdin closes (the bench
/// went away), so it never outlives the run.
mod backend {
    use super::BODY;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::process::ExitCode;
    use tokio::io::AsyncReadExt;

    pub fn run(addr: &str) -> ExitCode {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("backend: cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tokio::spawn(async {
                let mut sink = Vec::new();
                let _ = tokio::io::stdin().read_to_end(&mut sink).await;
                std::process::exit(0);
            });
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let body = if req.uri().path() == "/health" {
                            Bytes::from_static(b"ok\n")
                        } else {
                            Bytes::from_static(BODY)
                        };
                        let mut r = Response::new(Full::new(body));
                        r.headers_mut()
                            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
                        Ok::<_, Infallible>(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    }
}

/// Everything the environment can change.
#[derive(Debug, Clone)]
struct Settings {
    duration: Duration,
    runs: usize,
    connections: usize,
    /// (wrk's CPU, the servers' CPU), when pinning.
    pin: Option<(usize, usize)>,
    only: Option<Vec<String>>,
    write: bool,
    perf: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Result<Self> {
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
        let write = perf.is_none() && var("PROXY_BENCH_WRITE").as_deref() != Some("0");
        let only = var("PROXY_BENCH_ONLY").map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        Ok(Settings {
            duration,
            runs,
            connections,
            pin,
            only,
            write,
            perf,
        })
    }

    fn wrk_args(&self) -> String {
        format!(
            "wrk -t1 -c{} -d{}s --latency",
            self.connections,
            self.duration.as_secs()
        )
    }
}

// ---------------------------------------------------------------- processes

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Proc {
    name: &'static str,
    server: ChildServer,
}

impl Proc {
    fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Asks the process to stop (SIGTERM); `drop` waits and then kills.
    fn terminate(&mut self) {
        self.server.terminate();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.server.has_exited() {
            self.terminate();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if self.server.has_exited() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Dropping the ChildServer kills it (SIGKILL).
        }
    }
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Variables of the caller's environment that would change the children.
const ENV_REMOVED: [&str; 5] = [
    "EDGEPLANE_JOIN_TOKEN",
    "EDGEPLANE_ADMIN_TOKEN",
    "EDGEPLANE_CATALOG",
    "EDGEPLANE_DATA_PATH",
    "EDGEPLANE_ADVERTISE_ADDRESS",
];

/// `program args...`, on `cpu` when pinning, output to `dir/name.log`.
fn spawn(
    dir: &Path,
    name: &'static str,
    cpu: Option<usize>,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> Result<Proc> {
    let log = dir.join(format!("{name}.log"));
    let (program, args) = match cpu {
        Some(c) => {
            let mut pinned = vec!["-c".to_string(), c.to_string(), program.display().to_string()];
            pinned.extend_from_slice(args);
            (Path::new("taskset"), pinned)
        }
        None => (program, args.to_vec()),
    };
    let mut vars = vec![("RUST_LOG".to_string(), "info,h2=warn,tower=warn,hyper=warn".to_string())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let options = SpawnOptions {
        env_remove: ENV_REMOVED.map(String::from).to_vec(),
        // The backend exits when its stdin closes, that is when the bench goes away.
        stdin_pipe: true,
    };
    let server = ChildServer::spawn_with(name, program, args, vars, &log, options)?;
    Ok(Proc { name, server })
}

/// Polls `url` until `ok(status, body)`, while every one of `procs` stays alive.
async fn wait_for(
    http: &reqwest::Client,
    procs: &mut [&mut Proc],
    url: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> Result<()> {
    let last = RefCell::new(String::from("no answer yet"));
    let probe = || async {
        match http.get(url).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                if ok(status, &body) {
                    return true;
                }
                *last.borrow_mut() = format!("{status} {}", body.chars().take(200).collect::<String>());
            }
            Err(e) => *last.borrow_mut() = e.to_string(),
        }
        false
    };
    let mut servers: Vec<&mut ChildServer> = procs.iter_mut().map(|p| &mut p.server).collect();
    let Err(e) = child::wait_all_ready(&mut servers, STARTUP, probe).await else {
        return Ok(());
    };
    let logs: Vec<String> = procs
        .iter()
        .map(|p| format!("--- {}:\n{}", p.name, log_tail(p.server.log())))
        .collect();
    bail!("{url}: {e} (last: {})\n{}", last.into_inner(), logs.join("\n"))
}

// -------------------------------------------------------------------- tools

struct Tools {
    wrk: PathBuf,
    nginx: PathBuf,
    rathole: PathBuf,
    taskset: Option<PathBuf>,
    perf: Option<PathBuf>,
    edgeplane: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // `cargo install` puts binaries here, which is not always on PATH.
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.push("/usr/sbin".into());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn find_tools(s: &Settings) -> Result<Tools> {
    let mut missing = Vec::new();
    let mut need = |name: &str, how: &str| {
        let p = which(name);
        if p.is_none() {
            missing.push(format!("  {name}: {how}"));
        }
        p.unwrap_or_default()
    };
    let wrk = need("wrk", "apt-get install -y wrk");
    let nginx = need("nginx", "apt-get install -y nginx");
    let rathole = need(
        "rathole",
        "cargo install rathole   (without --locked; compiles for a few minutes)",
    );
    let taskset = if s.pin.is_some() {
        Some(need(
            "taskset",
            "apt-get install -y util-linux (or PROXY_BENCH_PIN=off)",
        ))
    } else {
        None
    };
    let perf = if s.perf.is_some() {
        Some(need("perf", "apt-get install -y linux-perf"))
    } else {
        None
    };
    // Cargo builds the binary (same profile) for the bench and names it here.
    let edgeplane = PathBuf::from(env!("CARGO_BIN_EXE_edgeplane"));
    if !edgeplane.is_file() {
        missing.push(format!(
            "  {}: cargo bench builds it; run the bench through cargo",
            edgeplane.display()
        ));
    }
    if !missing.is_empty() {
        bail!("missing tools; install them and run again:\n{}", missing.join("\n"));
    }
    Ok(Tools {
        wrk,
        nginx,
        rathole,
        taskset,
        perf,
        edgeplane,
    })
}

/// First line of `program args` (stdout, else stderr), for the record.
fn version(program: &Path, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_string()
        }
        Err(_) => "?".into(),
    }
}

// ------------------------------------------------------------------- setup

/// One way from wrk to the backend.
struct Target {
    key: &'static str,
    label: &'static str,
    url: String,
    /// Server-side processes whose CPU time counts for this path.
    pids: Vec<u32>,
}

struct Fleet {
    targets: Vec<Target>,
    /// Held so that dropping the fleet stops everything.
    procs: Vec<Proc>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Everyone at once, so the waits overlap; then each is reaped (or killed).
        for p in self.procs.iter_mut().rev() {
            p.terminate();
        }
    }
}

fn wanted(s: &Settings, key: &str) -> bool {
    key == "backend" || s.only.as_ref().is_none_or(|o| o.iter().any(|k| k == key))
}

async fn start_fleet(s: &Settings, tools: &Tools, dir: &Path) -> Result<Fleet> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()?;
    let cpu = s.pin.map(|(_, server)| server);
    let mut procs = Vec::new();
    let mut targets = Vec::new();

    // The backend: this executable again.
    let bport = child::free_port()?;
    let backend_addr = format!("127.0.0.1:{bport}");
    let exe = std::env::current_exe()?;
    let mut backend = spawn(dir, "backend", cpu, &exe, &[], &[(BACKEND_ENV, &backend_addr)])?;
    let backend_url = format!("http://{backend_addr}");
    wait_for(&http, &mut [&mut backend], &format!("{backend_url}/health"), |st, _| {
        st == 200
    })
    .await?;
    let backend_pid = backend.pid().context("backend pid")?;
    targets.push(Target {
        key: "backend",
        label: "backend (no proxy)",
        url: format!("{backend_url}/bench"),
        pids: vec![backend_pid],
    });
    procs.push(backend);
    let body_ok = |st: u16, b: &str| st == 200 && b.as_bytes() == BODY;

    if wanted(s, "nginx") {
        let port = child::free_port()?;
        let ndir = dir.join("nginx");
        std::fs::create_dir_all(&ndir)?;
        let conf = ndir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&ndir, port, &backend_addr))?;
        let args = [
            "-p",
            &format!("{}/", ndir.display()),
            "-e",
            &ndir.join("error.log").display().to_string(),
            "-c",
            &conf.display().to_string(),
            "-g",
            "daemon off;",
        ]
        .map(String::from);
        let mut p = spawn(dir, "nginx", cpu, &tools.nginx, &args, &[])?;
        let url = format!("http://127.0.0.1:{port}/bench");
        wait_for(&http, &mut [&mut p], &url, body_ok).await?;
        let master = p.pid().context("nginx pid")?;
        let mut pids = vec![backend_pid, master];
        pids.extend(procfs::children_of(master));
        targets.push(Target {
            key: "nginx",
            label: "nginx (reverse proxy, keepalive 64)",
            url,
            pids,
        });
        procs.push(p);
    }

    if wanted(s, "rathole") {
        let (control, public) = (child::free_port()?, child::free_port()?);
        let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let server = dir.join("rathole-server.toml");
        let client = dir.join("rathole-client.toml");
        std::fs::write(
            &server,
            format!(
                "[server]\nbind_addr = \"127.0.0.1:{control}\"\n\n[server.services.bench]\ntoken = \"{token}\"\nbind_addr = \"127.0.0.1:{public}\"\n"
            ),
        )?;
        std::fs::write(
            &client,
            format!(
                "[client]\nremote_addr = \"127.0.0.1:{control}\"\n\n[client.services.bench]\ntoken = \"{token}\"\nlocal_addr = \"{backend_addr}\"\n"
            ),
        )?;
        let mut rs = spawn(
            dir,
            "rathole-server",
            cpu,
            &tools.rathole,
            &["-s".into(), server.display().to_string()],
            &[],
        )?;
        let mut rc = spawn(
            dir,
            "rathole-client",
            cpu,
            &tools.rathole,
            &["-c".into(), client.display().to_string()],
            &[],
        )?;
        let url = format!("http://127.0.0.1:{public}/bench");
        wait_for(&http, &mut [&mut rs, &mut rc], &url, body_ok).await?;
        targets.push(Target {
            key: "rathole",
            label: "rathole (reverse tunnel)",
            url,
            pids: vec![backend_pid, rs.pid().context("pid")?, rc.pid().context("pid")?],
        });
        procs.push(rs);
        procs.push(rc);
    }

    for (key, label, mode, extra, coordinator, worker) in [
        (
            "direct",
            "edgeplane direct",
            "direct",
            None,
            "coordinator-direct",
            "worker-direct",
        ),
        (
            "direct-hyper",
            "edgeplane direct, fast path off",
            "direct",
            Some("--no-http1-fast-path"),
            "coordinator-direct-hyper",
            "worker-direct-hyper",
        ),
        (
            "tunnel",
            "edgeplane tunnel",
            "tunnel",
            None,
            "coordinator-tunnel",
            "worker-tunnel",
        ),
        (
            "tunnel-hyper",
            "edgeplane tunnel, fast path off",
            "tunnel",
            Some("--no-http1-fast-path"),
            "coordinator-tunnel-hyper",
            "worker-tunnel-hyper",
        ),
    ] {
        if !wanted(s, key) {
            continue;
        }
        let port = child::free_port()?;
        let coord_url = format!("http://127.0.0.1:{port}");
        let mut args = vec!["coordinator".into(), "--listen".into(), format!("127.0.0.1:{port}")];
        args.extend(extra.map(String::from));
        let mut coord = spawn(dir, coordinator, cpu, &tools.edgeplane, &args, &[])?;
        wait_for(&http, &mut [&mut coord], &format!("{coord_url}/health"), |st, _| {
            st == 200
        })
        .await?;
        let state = dir.join(format!("state-{key}"));
        let mut worker = spawn(
            dir,
            worker,
            cpu,
            &tools.edgeplane,
            &[
                "worker".into(),
                "--coordinator".into(),
                coord_url.clone(),
                "--name".into(),
                format!("bench-{key}"),
                "--service".into(),
                format!("notes={backend_url}"),
                "--data-path".into(),
                mode.into(),
                "--state-dir".into(),
                state.display().to_string(),
                "--probe-interval".into(),
                "500ms".into(),
            ],
            &[],
        )?;
        wait_for(
            &http,
            &mut [&mut coord, &mut worker],
            &format!("{coord_url}/api/admin/services"),
            |st, body| {
                st == 200
                    && serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| {
                        v.as_array()
                            .into_iter()
                            .flatten()
                            .any(|svc| svc["name"] == "notes-coa" && svc["ready"].as_u64().unwrap_or(0) >= 1)
                    })
            },
        )
        .await?;
        let url = format!("{coord_url}/service/notes/bench");
        wait_for(&http, &mut [&mut coord, &mut worker], &url, body_ok).await?;
        targets.push(Target {
            key,
            label,
            url,
            pids: vec![backend_pid, coord.pid().context("pid")?, worker.pid().context("pid")?],
        });
        procs.push(coord);
        procs.push(worker);
    }
    Ok(Fleet { targets, procs })
}

fn nginx_conf(dir: &Path, port: u16, backend: &str) -> String {
    let d = dir.display();
    format!(
        r#"# Generated by benches/proxy.rs. One worker process: the server side of
# the bench is pinned to one CPU, and more workers on it only add switches.
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    # wrk keeps its connections; nginx should not close them every 1000 requests.
    keepalive_requests 1000000;
    upstream backend {{
        server {backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}

// --------------------------------------------------------------- measuring

#[derive(Debug, Clone, Default)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    /// Non-2xx responses plus socket errors.
    errors: u64,
    /// Server-side CPU seconds per request, in microseconds.
    cpu_us_per_req: f64,
    /// Busy share of (wrk's CPU, the servers' CPU), when pinned.
    busy: Option<(f64, f64)>,
}

/// `1.23ms`, `456.00us`, `1.02s`, `2.00m` -> microseconds.
fn parse_latency(s: &str) -> Option<f64> {
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

fn parse_wrk(out: &str) -> Result<Sample> {
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

async fn wrk(s: &Settings, tools: &Tools, url: &str, duration: Duration) -> Result<String> {
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

async fn measure(s: &Settings, tools: &Tools, t: &Target, perf_run: Option<&Path>) -> Result<Sample> {
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
    let out = wrk(s, tools, &t.url, s.duration).await?;
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

struct Summary {
    label: &'static str,
    key: &'static str,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_req: f64,
    busy: Option<(f64, f64)>,
    errors: u64,
    all_rps: Vec<f64>,
}

fn summarize(t: &Target, samples: &[Sample]) -> Summary {
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
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

// ---------------------------------------------------------------- reporting

fn table(rows: &[Summary]) -> String {
    let base = rows.iter().find(|r| r.key == "backend").expect("backend row");
    let mut t = String::from(
        "| path | req/s | vs backend | p50 | vs backend | p99 | vs backend | server CPU per request | CPU busy (wrk / servers) | req/s per round |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
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
            "| {}{} | {:.0} | {:.2}x | {} | {:.2}x | {} | {:.2}x | {:.1} µs | {} | {} |",
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
            rounds.join(", ")
        );
    }
    t
}

fn verdicts(rows: &[Summary]) -> Vec<String> {
    let get = |k: &str| rows.iter().find(|r| r.key == k);
    let mut v = Vec::new();
    let mark = |ok: bool| if ok { "met" } else { "**missed**" };
    if let (Some(d), Some(n)) = (get("direct"), get("nginx")) {
        v.push(format!(
            "- edgeplane direct at least as fast as nginx: {} ({:.0} vs {:.0} req/s, {:.2}x nginx)",
            mark(d.rps >= n.rps),
            d.rps,
            n.rps,
            d.rps / n.rps
        ));
        v.push(format!(
            "- edgeplane direct p99 no worse than nginx: {} ({} vs {})",
            mark(d.p99_us <= n.p99_us),
            fmt_us(d.p99_us),
            fmt_us(n.p99_us)
        ));
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

/// `rathole --version` prints its name, then `Build Version: x.y.z` further down.
fn rathole_version(program: &Path) -> String {
    let out = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build Version:"))
        .map_or("?", str::trim);
    format!("rathole {v}")
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine(tools: &Tools) -> String {
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

struct Report<'a> {
    settings: &'a Settings,
    machine: String,
    commit: String,
    load_before: String,
    load_after: String,
    busy_before: String,
    rows: Vec<Summary>,
}

impl Report<'_> {
    fn markdown(&self) -> String {
        let s = self.settings;
        let mut m = String::new();
        let _ = writeln!(m, "Command: `cargo bench --bench proxy`  ");
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
             `CPU busy`: share of each pinned core in use during the run.\n\n",
        );
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
fn write_section(path: &Path, block: &str) -> Result<()> {
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

/// What else the machine was doing just before the run: each CPU's busy
/// share over one second, and the processes with the most CPU time in that
/// second (this bench and the cargo that started it left out).
fn busy_before_start() -> String {
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
fn ancestors() -> Vec<u32> {
    let mut out = vec![std::process::id()];
    while let Some(&pid) = out.last() {
        match procfs::parent_of(pid) {
            Some(p) if p > 1 && !out.contains(&p) => out.push(p),
            _ => break,
        }
    }
    out
}

// -------------------------------------------------------------------- main

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
    let fleet = start_fleet(&s, &tools, dir.path()).await?;
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
