//! The bench's child processes: the crate's [`ChildServer`], pinned with
//! `taskset` when asked, stopped with SIGTERM (then SIGKILL) when dropped.

use super::tls::BenchCert;
use anyhow::{bail, Result};
use edgeplane::bench::child::{self, ChildServer, SpawnOptions};
use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest wait for any process to come up.
const STARTUP: Duration = Duration::from_secs(30);

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: &'static str,
    pub server: ChildServer,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Asks the process to stop (SIGTERM); `drop` waits and then kills.
    pub fn terminate(&mut self) {
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

pub fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Variables of the caller's environment that would change the children.
pub const ENV_REMOVED: [&str; 5] = [
    "EDGEPLANE_JOIN_TOKEN",
    "EDGEPLANE_ADMIN_TOKEN",
    "EDGEPLANE_CATALOG",
    "EDGEPLANE_DATA_PATH",
    "EDGEPLANE_ADVERTISE_ADDRESS",
];

/// `program args...`, on `cpu` when pinning, output to `dir/name.log`.
pub fn spawn(
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

/// GETs for the readiness probes: reqwest for `http://` (it is built
/// without TLS here), the bench certificate's client for `https://`.
pub struct Probe {
    pub http: reqwest::Client,
    pub tls: BenchCert,
}

impl Probe {
    /// Status and body of `GET url`.
    pub async fn get(&self, url: &str) -> Result<(u16, String), String> {
        if url.starts_with("https://") {
            return match tokio::time::timeout(PROBE_LIMIT, self.tls.get(url)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {PROBE_LIMIT:?}")),
            };
        }
        let r = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    }
}

/// Bound on one HTTPS probe (reqwest has its own timeout).
const PROBE_LIMIT: Duration = Duration::from_secs(2);

/// Polls `url` until `ok(status, body)`, while every one of `procs` stays alive.
pub async fn wait_for(probe: &Probe, procs: &mut [&mut Proc], url: &str, ok: impl Fn(u16, &str) -> bool) -> Result<()> {
    let last = RefCell::new(String::from("no answer yet"));
    let check = || async {
        match probe.get(url).await {
            Ok((status, body)) => {
                if ok(status, &body) {
                    return true;
                }
                *last.borrow_mut() = format!("{status} {}", body.chars().take(200).collect::<String>());
            }
            Err(e) => *last.borrow_mut() = e,
        }
        false
    };
    let mut servers: Vec<&mut ChildServer> = procs.iter_mut().map(|p| &mut p.server).collect();
    let Err(e) = child::wait_all_ready(&mut servers, STARTUP, check).await else {
        return Ok(());
    };
    let logs: Vec<String> = procs
        .iter()
        .map(|p| format!("--- {}:\n{}", p.name, log_tail(p.server.log())))
        .collect();
    bail!("{url}: {e} (last: {})\n{}", last.into_inner(), logs.join("\n"))
}
