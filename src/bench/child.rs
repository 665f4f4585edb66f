//! A server the bench runs as its own child process (the coordinator, or
//! etcd for the side-by-side figure), so that its CPU and memory can be read
//! from its own `/proc` entry and so that it can be killed and started
//! again on the same port.

use super::error::BenchError;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct ChildServer {
    what: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Child,
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl ChildServer {
    /// Starts `program args...`, its stdout and stderr appended to `log`.
    pub fn spawn(
        what: &'static str,
        program: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: &Path,
    ) -> Result<Self, BenchError> {
        let child = start(what, program, &args, &env, log)?;
        Ok(ChildServer {
            what,
            program: program.to_path_buf(),
            args,
            env,
            log: log.to_path_buf(),
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Polls `probe` until it succeeds; fails if the process exits first or
    /// `limit` passes. Returns how long it took.
    pub async fn wait_ready<F, Fut>(&mut self, limit: Duration, mut probe: F) -> Result<Duration, BenchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(BenchError::Exited {
                    what: self.what,
                    status,
                    log: self.log.display().to_string(),
                });
            }
            if probe().await {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(BenchError::NotReady {
                    what: self.what,
                    after: limit,
                    log: self.log.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, as a crash: no goodbye to anyone. Waits until it is reaped.
    pub async fn kill(&mut self) -> Result<(), BenchError> {
        let _ = self.child.start_kill();
        self.child.wait().await?;
        Ok(())
    }

    /// Starts the same command again (after [`ChildServer::kill`]).
    pub fn respawn(&mut self) -> Result<(), BenchError> {
        self.child = start(self.what, &self.program, &self.args, &self.env, &self.log)?;
        Ok(())
    }

    /// SIGKILL and reap; for the end of a run.
    pub async fn stop(mut self) {
        let _ = self.kill().await;
    }
}

fn start(
    what: &'static str,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Child, BenchError> {
    let spawn_err = |source| BenchError::Spawn {
        what,
        program: program.display().to_string(),
        source,
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(spawn_err)?;
    let err = out.try_clone().map_err(spawn_err)?;
    Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)
}
