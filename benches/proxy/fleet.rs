//! Every path's processes, started and checked before anything is measured:
//! the backend, nginx (plain and TLS), rathole, and a coordinator with one
//! worker per edgeplane path.

use super::backend::{self, BODY};
use super::processes::{spawn, wait_for, Probe, Proc};
use super::settings::Settings;
use super::tls::BenchCert;
use super::tools::Tools;
use anyhow::{Context, Result};
use edgeplane::bench::{child, procfs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One way from wrk to the backend.
pub struct Target {
    pub key: &'static str,
    pub label: &'static str,
    pub url: String,
    /// Server-side processes whose CPU time counts for this path.
    pub pids: Vec<u32>,
}

pub struct Fleet {
    pub targets: Vec<Target>,
    /// Held so that dropping the fleet stops everything.
    pub procs: Vec<Proc>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Everyone at once, so the waits overlap; then each is reaped (or killed).
        for p in self.procs.iter_mut().rev() {
            p.terminate();
        }
    }
}

pub fn wanted(s: &Settings, key: &str) -> bool {
    key == "backend" || s.only.as_ref().is_none_or(|o| o.iter().any(|k| k == key))
}

/// One edgeplane path: a coordinator and its worker.
struct EdgeplanePath {
    key: &'static str,
    label: &'static str,
    /// The worker's `--data-path`.
    mode: &'static str,
    /// An extra coordinator flag.
    extra: Option<&'static str>,
    /// Names of the two processes (and of their log files).
    coordinator: &'static str,
    worker: &'static str,
    /// None: the row is skipped (a baseline row without a baseline binary).
    program: Option<PathBuf>,
    /// The coordinator serves TLS with the bench certificate.
    tls: bool,
}

pub async fn start(s: &Settings, tools: &Tools, dir: &Path) -> Result<Fleet> {
    let probe = Probe {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()?,
        tls: BenchCert::make(dir)?,
    };
    let cert = &probe.tls;
    let cpu = s.pin.map(|(_, server)| server);
    let mut procs = Vec::new();
    let mut targets = Vec::new();

    // The backend: this executable again.
    let bport = child::free_port()?;
    let backend_addr = format!("127.0.0.1:{bport}");
    let exe = std::env::current_exe()?;
    let mut backend = spawn(dir, "backend", cpu, &exe, &[], &[(backend::ENV, &backend_addr)])?;
    let backend_url = format!("http://{backend_addr}");
    wait_for(
        &probe,
        &mut [&mut backend],
        &format!("{backend_url}/health"),
        |st, _| st == 200,
    )
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

    for (key, label, tls) in [
        ("nginx", "nginx (reverse proxy, keepalive 64)", false),
        ("nginx-tls", "nginx, TLS (reverse proxy, keepalive 64)", true),
    ] {
        if !wanted(s, key) {
            continue;
        }
        let port = child::free_port()?;
        let ndir = dir.join(key);
        std::fs::create_dir_all(&ndir)?;
        let conf = ndir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&ndir, port, &backend_addr, tls.then_some(cert)))?;
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
        let name = if tls { "nginx-tls" } else { "nginx" };
        let mut p = spawn(dir, name, cpu, &tools.nginx, &args, &[])?;
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}/bench");
        wait_for(&probe, &mut [&mut p], &url, body_ok).await?;
        let master = p.pid().context("nginx pid")?;
        let mut pids = vec![backend_pid, master];
        pids.extend(procfs::children_of(master));
        targets.push(Target { key, label, url, pids });
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
        wait_for(&probe, &mut [&mut rs, &mut rc], &url, body_ok).await?;
        targets.push(Target {
            key: "rathole",
            label: "rathole (reverse tunnel)",
            url,
            pids: vec![backend_pid, rs.pid().context("pid")?, rc.pid().context("pid")?],
        });
        procs.push(rs);
        procs.push(rc);
    }

    let this = Some(tools.edgeplane.clone());
    let baseline = s.baseline.clone();
    // Each coordinator and worker logs to its own file, named for the path.
    let path = |key, label, mode, extra, program: &Option<PathBuf>, tls, (coordinator, worker)| EdgeplanePath {
        key,
        label,
        mode,
        extra,
        coordinator,
        worker,
        program: program.clone(),
        tls,
    };
    let fast_off = Some("--no-http1-fast-path");
    for p in [
        path(
            "direct",
            "edgeplane direct",
            "direct",
            None,
            &this,
            false,
            ("coordinator-direct", "worker-direct"),
        ),
        path(
            "direct-tls",
            "edgeplane direct, TLS",
            "direct",
            None,
            &this,
            true,
            ("coordinator-direct-tls", "worker-direct-tls"),
        ),
        path(
            "direct-baseline",
            "edgeplane direct, baseline binary",
            "direct",
            None,
            &baseline,
            false,
            ("coordinator-direct-baseline", "worker-direct-baseline"),
        ),
        path(
            "tunnel-baseline",
            "edgeplane tunnel, baseline binary",
            "tunnel",
            None,
            &baseline,
            false,
            ("coordinator-tunnel-baseline", "worker-tunnel-baseline"),
        ),
        path(
            "direct-nometrics",
            "edgeplane direct, proxy metrics off",
            "direct",
            Some("--no-proxy-metrics"),
            &this,
            false,
            ("coordinator-direct-nometrics", "worker-direct-nometrics"),
        ),
        path(
            "direct-hyper",
            "edgeplane direct, fast path off",
            "direct",
            fast_off,
            &this,
            false,
            ("coordinator-direct-hyper", "worker-direct-hyper"),
        ),
        path(
            "tunnel",
            "edgeplane tunnel",
            "tunnel",
            None,
            &this,
            false,
            ("coordinator-tunnel", "worker-tunnel"),
        ),
        path(
            "tunnel-hyper",
            "edgeplane tunnel, fast path off",
            "tunnel",
            fast_off,
            &this,
            false,
            ("coordinator-tunnel-hyper", "worker-tunnel-hyper"),
        ),
    ] {
        // The baseline rows exist only when a baseline binary is given.
        let Some(program) = &p.program else { continue };
        if !wanted(s, p.key) {
            continue;
        }
        let port = child::free_port()?;
        let scheme = if p.tls { "https" } else { "http" };
        let coord_url = format!("{scheme}://127.0.0.1:{port}");
        let mut args = vec!["coordinator".into(), "--listen".into(), format!("127.0.0.1:{port}")];
        args.extend(p.extra.map(String::from));
        let mut worker_args = vec![
            "worker".into(),
            "--coordinator".into(),
            coord_url.clone(),
            "--name".into(),
            format!("bench-{}", p.key),
            "--service".into(),
            format!("notes={backend_url}"),
            "--data-path".into(),
            p.mode.into(),
            "--state-dir".into(),
            dir.join(format!("state-{}", p.key)).display().to_string(),
            "--probe-interval".into(),
            "500ms".into(),
        ];
        if p.tls {
            // The worker joins over TLS for its certificate, as a real one does.
            let file = |f: &PathBuf| f.display().to_string();
            for (flag, f) in [
                ("--tls-cert", &cert.cert),
                ("--tls-key", &cert.key),
                ("--ca-cert", &cert.ca_cert),
                ("--ca-key", &cert.ca_key),
            ] {
                args.extend([flag.to_string(), file(f)]);
            }
            worker_args.extend(["--ca-cert".to_string(), file(&cert.ca_cert)]);
        }
        let mut coord = spawn(dir, p.coordinator, cpu, program, &args, &[])?;
        wait_for(&probe, &mut [&mut coord], &format!("{coord_url}/health"), |st, _| {
            st == 200
        })
        .await?;
        let mut worker = spawn(dir, p.worker, cpu, program, &worker_args, &[])?;
        wait_for(
            &probe,
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
        wait_for(&probe, &mut [&mut coord, &mut worker], &url, body_ok).await?;
        targets.push(Target {
            key: p.key,
            label: p.label,
            url,
            pids: vec![backend_pid, coord.pid().context("pid")?, worker.pid().context("pid")?],
        });
        procs.push(coord);
        procs.push(worker);
    }
    Ok(Fleet { targets, procs })
}

/// nginx proxying to `backend`; with `tls`, listening with the bench
/// certificate (the same files the TLS coordinator serves), everything
/// else the same as the plain row.
pub fn nginx_conf(dir: &Path, port: u16, backend: &str, tls: Option<&BenchCert>) -> String {
    let d = dir.display();
    let listen = match tls {
        None => format!("listen 127.0.0.1:{port};"),
        Some(c) => format!(
            "listen 127.0.0.1:{port} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.2 TLSv1.3;",
            c.cert.display(),
            c.key.display()
        ),
    };
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
        {listen}
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
