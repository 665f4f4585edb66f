//! What can stop a bench run, typed, so that the CLI says which step failed
//! and the test can tell a broken coordinator from a broken machine.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid bench settings: {0}")]
    Settings(String),
    #[error("cannot raise the open-file limit: {0}")]
    FdLimit(std::io::Error),
    #[error("cannot start {what} (`{program}`): {source}")]
    Spawn {
        what: &'static str,
        program: String,
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {after:?}; its log is at {log}")]
    NotReady {
        what: &'static str,
        after: Duration,
        log: String,
    },
    #[error("{what} exited early ({status}); its log is at {log}")]
    Exited {
        what: &'static str,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("cannot read /proc/{pid}: {source}")]
    Proc { pid: u32, source: std::io::Error },
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("bad target URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot watch the fleet: {0}")]
    Watch(String),
    #[error("cannot write {path}: {source}")]
    Output { path: String, source: std::io::Error },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
