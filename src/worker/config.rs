//! Everything a worker agent can be told. Every environment variable has a
//! flag twin.

use crate::duration::parse_duration;
use crate::parse::{normalize_url, parse_bytes};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// The coordinator to dial (`http://host:8080`; `host:8080` works too).
    #[arg(long, env = "COORDINATOR_URL", default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,

    /// The name shown in logs and APIs; defaults to the hostname.
    #[arg(long, env = "WORKER_NAME")]
    pub name: Option<String>,

    /// A service this worker already runs, routed without placement: NAME=URL. Repeatable.
    #[arg(long = "service", value_parser = parse_service)]
    pub services: Vec<(String, String)>,

    /// A label for placement and operators: KEY=VALUE. Repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// A GPU this machine has: MODEL=MEMORY (e.g. `A100=80GiB`). Repeatable.
    #[arg(long = "gpu", value_parser = parse_gpu)]
    pub gpus: Vec<(String, u64)>,

    /// Where the worker keeps its persistent instance id. Default:
    /// `$XDG_STATE_HOME/edgeplane/<name>` or `~/.local/state/edgeplane/<name>`.
    #[arg(long, env = "EDGEPLANE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Address the coordinator may dial for the direct data path.
    #[arg(long, env = "EDGEPLANE_ADVERTISE_ADDRESS")]
    pub advertise: Option<String>,

    /// How the coordinator reaches this worker's services: `tunnel` (over a
    /// stream this worker opens: works behind NAT and Docker bridges),
    /// `direct` (the coordinator dials the services' URLs), or `auto`
    /// (direct when --advertise is given, else tunnel).
    #[arg(long, env = "EDGEPLANE_DATA_PATH", default_value = "auto", value_parser = ["auto", "direct", "tunnel"])]
    pub data_path: String,

    /// How this worker runs services placed on it: `docker` (a container
    /// from the catalog's image, through the Docker Engine API), `process`
    /// (the catalog's command), `none` (serve only what it declares; never
    /// given placements), or `auto` (docker when the engine answers, else process).
    #[arg(long, env = "EDGEPLANE_RUNTIME", default_value = "auto", value_parser = ["auto", "docker", "process", "none"])]
    pub runtime: String,

    /// Docker runtime: the network to put service containers on. Default:
    /// the worker's own network when it runs in a container (services are
    /// then reached by container name), else none (ports published on the host).
    #[arg(long, env = "EDGEPLANE_DOCKER_NETWORK")]
    pub docker_network: Option<String>,

    /// The edgeplane binary, when a catalog command names `edgeplane`
    /// (default: this executable).
    #[arg(long = "bin", env = "EDGEPLANE_BIN")]
    pub self_exe: Option<PathBuf>,

    /// Time a stopped service gets between SIGTERM and SIGKILL.
    #[arg(long, env = "EDGEPLANE_STOP_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub stop_grace: Duration,

    /// Shared secret the coordinator requires to join.
    #[arg(long, env = "EDGEPLANE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// First reconnect delay; doubles per failed attempt, with jitter.
    #[arg(long, env = "EDGEPLANE_RECONNECT_MIN", default_value = "500ms", value_parser = parse_duration)]
    pub reconnect_min: Duration,

    /// Cap on the reconnect delay.
    #[arg(long, env = "EDGEPLANE_RECONNECT_MAX", default_value = "30s", value_parser = parse_duration)]
    pub reconnect_max: Duration,

    /// Limit on dialing the coordinator and on waiting for its Welcome.
    #[arg(long, env = "EDGEPLANE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How often each service's readiness check runs.
    #[arg(long, env = "EDGEPLANE_PROBE_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// HTTP/2 ping interval, so a dead path to the coordinator is noticed.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE", default_value = "20s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long an HTTP/2 ping may go unanswered.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,
}

/// A worker configuration that cannot work, found before the worker dials.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkerConfigError {
    #[error("--service {name}={url}: {reason}")]
    ServiceUrl {
        name: String,
        url: String,
        reason: crate::routes::ServiceUrlError,
    },
}

impl WorkerConfig {
    /// Refuses what the coordinator would refuse in the Hello (a service URL
    /// that is not `http://`), so the operator hears why at start rather
    /// than from a worker that keeps reconnecting. Flags are checked as they
    /// are parsed too; this covers configurations built in code.
    pub fn validate(&self) -> Result<(), WorkerConfigError> {
        for (name, url) in &self.services {
            if let Err(reason) = crate::routes::check_service_url(url) {
                return Err(WorkerConfigError::ServiceUrl {
                    name: name.clone(),
                    url: url.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Defaults for embedding and tests: everything as the flags default,
    /// pointed at `coordinator`.
    pub fn new(coordinator: impl Into<String>) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            name: None,
            services: Vec::new(),
            labels: Vec::new(),
            gpus: Vec::new(),
            state_dir: None,
            advertise: None,
            data_path: "auto".into(),
            // Embedded agents run nothing unless told to.
            runtime: "none".into(),
            docker_network: None,
            self_exe: None,
            stop_grace: Duration::from_secs(5),
            join_token: None,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_secs(2),
            http2_keepalive_interval: Duration::from_secs(20),
            http2_keepalive_timeout: Duration::from_secs(10),
        }
    }

    /// Whether this worker's traffic goes through a tunnel.
    pub fn uses_tunnel(&self) -> bool {
        match self.data_path.as_str() {
            "tunnel" => true,
            "direct" => false,
            _ => self.advertise.as_deref().is_none_or(|a| a.trim().is_empty()),
        }
    }

    /// The runtime to use, with `auto` resolved: docker when the engine
    /// answers a ping (at `DOCKER_HOST`, or the default socket), else process.
    pub fn runtime_kind(&self) -> &str {
        match self.runtime.as_str() {
            "auto" if docker_answers() => "docker",
            "auto" => "process",
            other => other,
        }
    }

    /// The coordinator URL with a scheme.
    pub fn coordinator_url(&self) -> String {
        normalize_url(&self.coordinator)
    }
}

/// Whether a Docker Engine answers `GET /_ping` within a second, at
/// `DOCKER_HOST` (`unix://` or `tcp://`) or `/var/run/docker.sock`.
pub fn docker_answers() -> bool {
    use std::io::{Read, Write};
    fn ping(mut s: impl Read + Write) -> bool {
        let mut buf = [0u8; 64];
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.") && buf[..n].windows(5).any(|w| w == b" 200 "))
    }
    let limit = Some(std::time::Duration::from_secs(1));
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    if let Some(path) = host.strip_prefix("unix://") {
        std::os::unix::net::UnixStream::connect(path)
            .and_then(|s| s.set_read_timeout(limit).and(s.set_write_timeout(limit)).map(|_| s))
            .is_ok_and(ping)
    } else if let Some(addr) = host.strip_prefix("tcp://") {
        use std::net::ToSocketAddrs;
        addr.to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .and_then(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1)).ok())
            .and_then(|s| {
                s.set_read_timeout(limit)
                    .and(s.set_write_timeout(limit))
                    .map(|_| s)
                    .ok()
            })
            .is_some_and(ping)
    } else {
        false
    }
}

fn split_pair(s: &str, what: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected {what}, got `{s}`")),
    }
}

pub fn parse_service(s: &str) -> Result<(String, String), String> {
    let (name, url) = split_pair(s, "NAME=URL")?;
    if url.is_empty() {
        return Err(format!("service `{name}` needs a URL (NAME=URL)"));
    }
    let url = normalize_url(&url);
    crate::routes::check_service_url(&url).map_err(|e| format!("service `{name}`: {e}"))?;
    Ok((name, url))
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    split_pair(s, "KEY=VALUE")
}

pub fn parse_gpu(s: &str) -> Result<(String, u64), String> {
    let (model, mem) = split_pair(s, "MODEL=MEMORY (e.g. A100=80GiB)")?;
    Ok((model, parse_bytes(&mem)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_labels_gpus() {
        assert_eq!(
            parse_service("notes-coa=127.0.0.1:8100").unwrap(),
            ("notes-coa".into(), "http://127.0.0.1:8100".into())
        );
        assert!(parse_service("notes-coa").is_err());
        assert!(parse_service("=http://x").is_err());
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert_eq!(parse_gpu("A100=80GiB").unwrap().1, 80 * 1024 * 1024 * 1024);
        assert_eq!(parse_gpu("T4=16GB").unwrap().1, 16_000_000_000);
        assert!(parse_gpu("T4=lots").is_err());
    }

    #[test]
    fn https_service_urls_are_refused_at_start() {
        let https = parse_service("notes=https://10.0.0.5:8443").unwrap_err();
        assert!(https.contains("https:// service URLs are not supported yet"), "{https}");
        assert!(https.contains("plaintext"), "the message says why: {https}");
        assert!(parse_service("notes=ftp://10.0.0.5").is_err());

        // A configuration built in code is checked when the agent starts.
        let mut c = WorkerConfig::new("http://127.0.0.1:1");
        c.services = vec![("notes".into(), "http://10.0.0.5:8100".into())];
        assert_eq!(c.validate(), Ok(()));
        c.services.push(("vault".into(), "https://10.0.0.5:8443".into()));
        let err = c.validate().unwrap_err();
        assert_eq!(
            err,
            WorkerConfigError::ServiceUrl {
                name: "vault".into(),
                url: "https://10.0.0.5:8443".into(),
                reason: crate::routes::ServiceUrlError::Https,
            }
        );
        assert!(err.to_string().contains("not supported yet"), "{err}");
    }

    #[test]
    fn runtime_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            w: WorkerConfig,
        }
        let kind = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("worker").chain(args.iter().copied())).unwrap();
            cli.w.runtime_kind().to_string()
        };
        assert_eq!(kind(&["--runtime", "docker"]), "docker");
        assert_eq!(kind(&["--runtime", "process"]), "process");
        assert_eq!(kind(&["--runtime", "none"]), "none");
        let auto = kind(&[]);
        assert_eq!(auto, if docker_answers() { "docker" } else { "process" });
        assert!(Cli::try_parse_from(["worker", "--runtime", "podman"]).is_err());
    }

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(normalize_url("coord:8080"), "http://coord:8080");
        assert_eq!(normalize_url("https://c/"), "https://c");
    }
}
