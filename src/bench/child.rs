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
    options: SpawnOptions,
    child: Child,
}

/// How [`ChildServer::spawn_with`] starts a child beyond what
/// [`ChildServer::spawn`] does (the default: nothing more).
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// Inherited environment variables the child must not see.
    pub env_remove: Vec<String>,
    /// A pipe on the child's stdin instead of `/dev/null`, closed when the
    /// [`ChildServer`] goes away: a child that exits at the end of its input
    /// never outlives the bench.
    pub stdin_pipe: bool,
}

/// A port that was free on every address a moment ago, for a child that
/// binds it after we let it go.
///
/// Chosen below the kernel's ephemeral range, where outgoing connections
/// take their local ports: a port from that range (what binding port 0
/// returns) can be taken by any connection some other process opens before
/// the child binds it, which on a busy machine happened ("address already
/// in use"). Only another test picking the same port at random can collide
/// here. Falls back to port 0 when the range leaves no room below it.
pub fn free_port() -> Result<u16, BenchError> {
    let low = ephemeral_low().unwrap_or(32768);
    if low > 2048 {
        for _ in 0..200 {
            let port = rand::random_range(low / 2..low);
            if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let l = std::net::TcpListener::bind("0.0.0.0:0")?;
    Ok(l.local_addr()?.port())
}

/// The first port of the kernel's ephemeral range (Linux).
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Polls `probe` until it succeeds; fails as soon as one of `children` exits
/// (a proxy and what it forwards to, say), or when `limit` passes (naming the
/// last of them). Returns how long it took.
pub async fn wait_all_ready<F, Fut>(
    children: &mut [&mut ChildServer],
    limit: Duration,
    mut probe: F,
) -> Result<Duration, BenchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        for c in children.iter_mut() {
            c.check_running()?;
        }
        if probe().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            let (what, log) = children
                .last()
                .map_or(("nothing", String::new()), |c| (c.what, c.log.display().to_string()));
            return Err(BenchError::NotReady {
                what,
                after: limit,
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
        Self::spawn_with(what, program, args, env, log, SpawnOptions::default())
    }

    /// [`ChildServer::spawn`], with `options`.
    pub fn spawn_with(
        what: &'static str,
        program: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: &Path,
        options: SpawnOptions,
    ) -> Result<Self, BenchError> {
        let child = start(what, program, &args, &env, log, &options)?;
        Ok(ChildServer {
            what,
            program: program.to_path_buf(),
            args,
            env,
            log: log.to_path_buf(),
            options,
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
    pub async fn wait_ready<F, Fut>(&mut self, limit: Duration, probe: F) -> Result<Duration, BenchError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        wait_all_ready(&mut [self], limit, probe).await
    }

    /// Fails with [`BenchError::Exited`] if the process has exited.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait()? {
            Some(status) => Err(BenchError::Exited {
                what: self.what,
                status,
                log: self.log.display().to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Whether the process has exited (and has been reaped).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM, as an operator's stop; does not wait (see [`ChildServer::has_exited`]).
    pub fn terminate(&mut self) {
        if let (Some(pid), Ok(None)) = (self.child.id(), self.child.try_wait()) {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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
        self.child = start(
            self.what,
            &self.program,
            &self.args,
            &self.env,
            &self.log,
            &self.options,
        )?;
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
    options: &SpawnOptions,
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
    let mut command = Command::new(program);
    for k in &options.env_remove {
        command.env_remove(k);
    }
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if options.stdin_pipe {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_readiness_and_terminate() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        // Stays up while its stdin is open; says whether the variable, set
        // for every test cargo runs, reached it.
        let script = "echo \"dir=${CARGO_MANIFEST_DIR:-none}\"; cat >/dev/null";
        let options = SpawnOptions {
            env_remove: vec!["CARGO_MANIFEST_DIR".into()],
            stdin_pipe: true,
        };
        let args = vec!["-c".into(), script.into()];
        let mut sh = ChildServer::spawn_with("sh", Path::new("/bin/sh"), args, vec![], &log, options).unwrap();
        let ready = |c: &Path| std::fs::read_to_string(c).unwrap_or_default().contains("dir=");
        wait_all_ready(&mut [&mut sh], Duration::from_secs(10), || async { ready(&log) })
            .await
            .unwrap();
        assert!(std::fs::read_to_string(&log).unwrap().contains("dir=none"));
        sh.check_running().unwrap();
        sh.terminate();
        let start = Instant::now();
        while !sh.has_exited() {
            assert!(start.elapsed() < Duration::from_secs(10), "SIGTERM ignored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(sh.check_running(), Err(BenchError::Exited { what: "sh", .. })));
    }
}
