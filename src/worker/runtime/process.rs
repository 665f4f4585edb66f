//! The process runtime: runs a catalog entry's `command` with its port and
//! environment, logs its output under the service's name, restarts it with
//! backoff when it dies (reported `failed` with the exit status meanwhile),
//! and stops it with SIGTERM, then SIGKILL after a grace.
//!
//! Each service runs in its own process group, so stopping it stops
//! whatever it started too. Its pid is kept in the state dir: a worker that
//! crashed cannot stop its children, so the next start stops any it left.

use super::supervised::{by_name, Supervisors};
use super::RunSpec;
use crate::proto::ServiceState;
use crate::worker::{Backoff, ServiceReport};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the runtime needs from its agent.
#[derive(Clone)]
pub struct ProcessContext {
    /// Where readiness reports go (the agent's board).
    pub board: watch::Sender<BTreeMap<String, ServiceReport>>,
    /// Replaces `edgeplane` as a command's program.
    pub self_exe: PathBuf,
    /// Pid files of running services.
    pub run_dir: PathBuf,
    /// SIGTERM to SIGKILL.
    pub stop_grace: Duration,
    pub worker_name: String,
    /// Counts each restart after a service exited.
    pub restarts: crate::metrics::agent::Restarts,
}

pub struct ProcessRuntime {
    ctx: ProcessContext,
    running: Mutex<Supervisors>,
}

impl ProcessRuntime {
    pub fn new(ctx: ProcessContext) -> Self {
        reap_leftovers(&ctx.run_dir);
        ProcessRuntime {
            ctx,
            running: Mutex::new(Supervisors::default()),
        }
    }

    pub async fn reconcile(&self, wanted: Vec<RunSpec>) {
        let ctx = &self.ctx;
        self.running
            .lock()
            .await
            .reconcile(by_name(wanted), &ctx.board, |spec, stop| {
                tokio::spawn(supervise(spec, stop, ctx.clone()))
            })
            .await;
    }
}

fn report(board: &watch::Sender<BTreeMap<String, ServiceReport>>, name: &str, state: ServiceState, message: String) {
    board.send_modify(|m| {
        m.insert(name.to_string(), ServiceReport { state, message });
    });
}

/// Runs one service until told to stop, restarting it when it dies.
async fn supervise(spec: RunSpec, stop: CancellationToken, ctx: ProcessContext) {
    let name = spec.name.clone();
    if spec.command.is_empty() {
        let why = if spec.image.is_empty() {
            "the catalog gives no command".to_string()
        } else {
            format!(
                "the catalog gives only an image ({}); this worker runs processes",
                spec.image
            )
        };
        report(&ctx.board, &name, ServiceState::Failed, format!("cannot run: {why}"));
        stop.cancelled().await;
        return;
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let program = match spec.command[0].as_str() {
            "edgeplane" => ctx.self_exe.clone(),
            other => PathBuf::from(other),
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&spec.command[1..])
            .envs(&spec.env)
            .env("PORT", spec.port.to_string())
            .env("EDGEPLANE_SERVICE", &name)
            .env("EDGEPLANE_WORKER", &ctx.worker_name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(service = %name, program = %program.display(), error = %e, "cannot start");
                report(
                    &ctx.board,
                    &name,
                    ServiceState::Failed,
                    format!("cannot start {}: {e}", program.display()),
                );
                tokio::select! { _ = tokio::time::sleep(delay) => continue, _ = stop.cancelled() => return }
            }
        };
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        let pidfile = ctx.run_dir.join(format!("{name}.pid"));
        if let Some(p) = pid {
            let _ = std::fs::create_dir_all(&ctx.run_dir).and_then(|_| std::fs::write(&pidfile, p.to_string()));
        }
        info!(service = %name, pid = ?pid.map(|p| p.as_raw()), "started");
        if let Some(out) = child.stdout.take() {
            tokio::spawn(log_lines(name.clone(), "stdout", out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(log_lines(name.clone(), "stderr", err));
        }
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let _ = std::fs::remove_file(&pidfile);
                if started.elapsed() > Duration::from_secs(30) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                warn!(service = %name, %status, retry_in = ?delay, "exited; restarting");
                ctx.restarts.inc();
                report(&ctx.board, &name, ServiceState::Failed,
                    format!("exited ({status}); restarting in {}", crate::duration::format_short(delay)));
                tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = stop.cancelled() => return }
            }
            _ = stop.cancelled() => {
                if let Some(p) = pid {
                    terminate(&mut child, p, ctx.stop_grace, &name).await;
                }
                let _ = std::fs::remove_file(&pidfile);
                info!(service = %name, "stopped");
                return;
            }
        }
    }
}

/// SIGTERM to the service's process group, SIGKILL after the grace.
async fn terminate(child: &mut tokio::process::Child, pgid: Pid, grace: Duration, name: &str) {
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        warn!(service = %name, ?grace, "did not stop on SIGTERM; killing");
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    } else {
        // The leader is gone; make sure nothing else of the group lingers.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

async fn log_lines(service: String, stream: &'static str, r: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        info!(service = %service, stream, "{line}");
    }
}

/// Stops process groups a crashed worker left behind (their pid files).
fn reap_leftovers(run_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("pid") {
            continue;
        }
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // Only if it is still ours: it carries our marker in its environment.
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ
                .split(|b| *b == 0)
                .any(|kv| kv.starts_with(b"EDGEPLANE_SERVICE="))
            {
                warn!(pid, file = %path.display(), "stopping a service left by an earlier run");
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}
