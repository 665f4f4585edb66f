//! Everything a worker agent can be told. Every environment variable has a
//! flag twin, and every default is written once, in [`defaults`], for both
//! the flags and [`WorkerConfig::default`].

use super::flags::{parse_gpu, parse_label, parse_service};
use super::runtime::RuntimeKind;
use crate::duration::parse_duration;
use std::path::PathBuf;
use std::time::Duration;

/// The worker's defaults: durations and URLs as an operator would type them
/// (clap's `default_value` takes a string), counts typed.
pub mod defaults {
    pub const COORDINATOR: &str = "http://127.0.0.1:8080";
    pub const STOP_GRACE: &str = "5s";
    pub const RECONNECT_MIN: &str = "500ms";
    pub const RECONNECT_MAX: &str = "30s";
    pub const CONNECT_TIMEOUT: &str = "10s";
    pub const PROBE_INTERVAL: &str = "2s";
    pub const HTTP2_KEEPALIVE_INTERVAL: &str = "20s";
    pub const HTTP2_KEEPALIVE_TIMEOUT: &str = "10s";
    /// The coordinator's default too (`coordinator --max-message-bytes`):
    /// what one end may send, the other decodes.
    pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
}

/// A default duration, parsed as clap parses it.
fn default_duration(s: &str) -> Duration {
    parse_duration(s).expect("every default duration parses")
}

/// How the coordinator reaches this worker's services (`--data-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPath {
    /// `direct` when `--advertise` is given, else `tunnel`.
    Auto,
    /// The coordinator dials the services' URLs.
    Direct,
    /// Over a stream this worker opens: works behind NAT and Docker bridges.
    Tunnel,
}

/// How this worker runs services placed on it (`--runtime`), before `auto`
/// is resolved into a [`RuntimeKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// `docker` when the engine answers a ping, else `process`.
    Auto,
    /// A container from the catalog's image, through the Docker Engine API.
    Docker,
    /// The catalog's command, supervised.
    Process,
    /// Serve only what the worker declares; never given placements.
    None,
}

/// `"tunnel".parse()`, as the flag spells it (for configurations built in code).
impl std::str::FromStr for DataPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, false)
    }
}

/// `"process".parse()`, as the flag spells it.
impl std::str::FromStr for RuntimeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, false)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// The coordinator to dial (`http://host:8080`; `host:8080` works too),
    /// or several, comma-separated: on losing one, the worker tries the
    /// next. A name with several addresses counts as several.
    #[arg(long, env = "COORDINATOR_URL", default_value = defaults::COORDINATOR)]
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

    /// How the coordinator reaches this worker's services.
    #[arg(long, env = "EDGEPLANE_DATA_PATH", value_enum, default_value_t = DataPath::Auto)]
    pub data_path: DataPath,

    /// How this worker runs services placed on it.
    #[arg(long, env = "EDGEPLANE_RUNTIME", value_enum, default_value_t = RuntimeChoice::Auto)]
    pub runtime: RuntimeChoice,

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
    #[arg(long, env = "EDGEPLANE_STOP_GRACE", default_value = defaults::STOP_GRACE, value_parser = parse_duration)]
    pub stop_grace: Duration,

    /// Shared secret the coordinator requires to join, or a join token
    /// from `edgeplane token create` (spent on the first join over TLS).
    #[arg(long, env = "EDGEPLANE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// PEM CA to trust for an `https://` coordinator; the system roots
    /// otherwise.
    #[arg(long = "ca-cert", env = "EDGEPLANE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Serve the agent's own metrics (`/metrics`, Prometheus text) here.
    #[arg(long = "metrics-listen", env = "EDGEPLANE_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// PEM CA to verify `https://` services against (requests through the
    /// tunnel, readiness probes); the system roots otherwise.
    #[arg(long = "service-ca", env = "EDGEPLANE_SERVICE_CA")]
    pub service_ca: Option<PathBuf>,

    /// First reconnect delay; doubles per failed attempt, with jitter. The
    /// tunnel reopens on the same schedule.
    #[arg(long, env = "EDGEPLANE_RECONNECT_MIN", default_value = defaults::RECONNECT_MIN, value_parser = parse_duration)]
    pub reconnect_min: Duration,

    /// Cap on the reconnect delay.
    #[arg(long, env = "EDGEPLANE_RECONNECT_MAX", default_value = defaults::RECONNECT_MAX, value_parser = parse_duration)]
    pub reconnect_max: Duration,

    /// Limit on dialing the coordinator and on waiting for its Welcome.
    #[arg(long, env = "EDGEPLANE_CONNECT_TIMEOUT", default_value = defaults::CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// How often each service's readiness check runs.
    #[arg(long, env = "EDGEPLANE_PROBE_INTERVAL", default_value = defaults::PROBE_INTERVAL, value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// HTTP/2 ping interval, so a dead path to the coordinator is noticed.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE", default_value = defaults::HTTP2_KEEPALIVE_INTERVAL, value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long an HTTP/2 ping may go unanswered.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE_TIMEOUT", default_value = defaults::HTTP2_KEEPALIVE_TIMEOUT, value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// Largest message accepted from the coordinator on the control stream,
    /// in bytes (an assignment with many services grows). Keep it at least
    /// the coordinator's `--max-message-bytes`.
    #[arg(long, env = "EDGEPLANE_MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
}

impl Default for WorkerConfig {
    /// The flags' defaults (the same [`defaults`]).
    fn default() -> Self {
        WorkerConfig {
            coordinator: defaults::COORDINATOR.into(),
            name: None,
            services: Vec::new(),
            labels: Vec::new(),
            gpus: Vec::new(),
            state_dir: None,
            advertise: None,
            data_path: DataPath::Auto,
            runtime: RuntimeChoice::Auto,
            docker_network: None,
            self_exe: None,
            stop_grace: default_duration(defaults::STOP_GRACE),
            join_token: None,
            ca_cert: None,
            service_ca: None,
            metrics_listen: None,
            reconnect_min: default_duration(defaults::RECONNECT_MIN),
            reconnect_max: default_duration(defaults::RECONNECT_MAX),
            connect_timeout: default_duration(defaults::CONNECT_TIMEOUT),
            probe_interval: default_duration(defaults::PROBE_INTERVAL),
            http2_keepalive_interval: default_duration(defaults::HTTP2_KEEPALIVE_INTERVAL),
            http2_keepalive_timeout: default_duration(defaults::HTTP2_KEEPALIVE_TIMEOUT),
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
        }
    }
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
    #[error("--coordinator names no coordinator; give one URL or several, comma-separated")]
    NoCoordinator,
    #[error("--ca-cert {0}")]
    CaCert(String),
    #[error("{0}")]
    ServiceCa(String),
}

impl WorkerConfig {
    /// Refuses what the coordinator would refuse in the Hello (a service URL
    /// that is not `http://` or `https://`), so the operator hears why at start rather
    /// than from a worker that keeps reconnecting. Flags are checked as they
    /// are parsed too; this covers configurations built in code.
    pub fn validate(&self) -> Result<(), WorkerConfigError> {
        if self.coordinator_urls().is_empty() {
            return Err(WorkerConfigError::NoCoordinator);
        }
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

    /// For embedding and tests: the defaults, pointed at `coordinator`, and
    /// with the `none` runtime: an embedded agent runs nothing unless told to.
    pub fn new(coordinator: impl Into<String>) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            runtime: RuntimeChoice::None,
            ..WorkerConfig::default()
        }
    }

    /// Whether this worker's traffic goes through a tunnel.
    pub fn uses_tunnel(&self) -> bool {
        match self.data_path {
            DataPath::Tunnel => true,
            DataPath::Direct => false,
            DataPath::Auto => self.advertise.as_deref().is_none_or(|a| a.trim().is_empty()),
        }
    }

    /// The runtime to use, with `auto` resolved: docker when the engine
    /// answers a ping (at `DOCKER_HOST`, or the default socket), else process.
    pub async fn runtime_kind(&self) -> RuntimeKind {
        resolve_runtime(self.runtime, &docker_host()).await
    }

    /// The coordinator URLs, each with a scheme, in the order given.
    pub fn coordinator_urls(&self) -> Vec<String> {
        super::targets::urls(&self.coordinator)
    }
}

/// `choice`, with `auto` resolved against the engine at `docker_host`.
async fn resolve_runtime(choice: RuntimeChoice, docker_host: &str) -> RuntimeKind {
    match choice {
        RuntimeChoice::Docker => RuntimeKind::Docker,
        RuntimeChoice::Process => RuntimeKind::Process,
        RuntimeChoice::None => RuntimeKind::None,
        RuntimeChoice::Auto if docker_answers_at(docker_host).await => RuntimeKind::Docker,
        RuntimeChoice::Auto => RuntimeKind::Process,
    }
}

/// `DOCKER_HOST`, or the engine's default socket.
fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// How long the engine gets to answer its ping.
const DOCKER_PING_LIMIT: Duration = Duration::from_secs(1);

/// Whether a Docker Engine answers `GET /_ping` within a second, at
/// `DOCKER_HOST` (`unix://` or `tcp://`) or `/var/run/docker.sock`.
/// Asynchronous, so that a slow engine holds no runtime thread while the
/// worker starts.
pub async fn docker_answers() -> bool {
    docker_answers_at(&docker_host()).await
}

/// [`docker_answers`] for an engine at `host` (`unix://PATH` or `tcp://HOST:PORT`).
async fn docker_answers_at(host: &str) -> bool {
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    async fn ping(mut s: impl AsyncRead + AsyncWrite + Unpin) -> bool {
        let mut buf = [0u8; 64];
        if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        s.read(&mut buf)
            .await
            .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.") && buf[..n].windows(5).any(|w| w == b" 200 "))
    }
    let attempt = async {
        if let Some(path) = host.strip_prefix("unix://") {
            match tokio::net::UnixStream::connect(path).await {
                Ok(s) => ping(s).await,
                Err(_) => false,
            }
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => ping(s).await,
                Err(_) => false,
            }
        } else {
            false
        }
    };
    tokio::time::timeout(DOCKER_PING_LIMIT, attempt).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::normalize_url;

    #[test]
    fn service_urls_are_checked_at_start() {
        assert_eq!(
            parse_service("vault=https://10.0.0.5:8443").unwrap().1,
            "https://10.0.0.5:8443"
        );
        let ftp = parse_service("notes=ftp://10.0.0.5").unwrap_err();
        assert!(ftp.contains("scheme `ftp` is not supported"), "{ftp}");

        // A configuration built in code is checked when the agent starts.
        let mut c = WorkerConfig::new("http://127.0.0.1:1");
        c.services = vec![
            ("notes".into(), "http://10.0.0.5:8100".into()),
            ("vault".into(), "https://10.0.0.5:8443".into()),
        ];
        assert_eq!(c.validate(), Ok(()));
        let none = WorkerConfig {
            coordinator: " , ".into(),
            ..c.clone()
        };
        assert_eq!(none.validate(), Err(WorkerConfigError::NoCoordinator));
        c.services.push(("files".into(), "ftp://10.0.0.5".into()));
        let err = c.validate().unwrap_err();
        assert_eq!(
            err,
            WorkerConfigError::ServiceUrl {
                name: "files".into(),
                url: "ftp://10.0.0.5".into(),
                reason: crate::routes::ServiceUrlError::Scheme("ftp".into()),
            }
        );
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        w: WorkerConfig,
    }

    /// Parses a `worker` command line with every env twin ignored, so the
    /// process environment cannot change the outcome.
    fn parse_clean(args: &[&str]) -> Result<WorkerConfig, clap::Error> {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let m = Cli::command()
            .mut_args(|a| a.env(None))
            .try_get_matches_from(std::iter::once("worker").chain(args.iter().copied()))?;
        Ok(Cli::from_arg_matches(&m)?.w)
    }

    #[test]
    fn an_empty_command_line_gives_the_same_configuration_as_default() {
        let parsed = parse_clean(&[]).unwrap();
        assert_eq!(format!("{parsed:#?}"), format!("{:#?}", WorkerConfig::default()));
        // `new` differs in what it says it does, and nothing else.
        let embedded = WorkerConfig {
            coordinator: defaults::COORDINATOR.into(),
            runtime: RuntimeChoice::Auto,
            ..WorkerConfig::new("elsewhere:1")
        };
        assert_eq!(format!("{embedded:#?}"), format!("{parsed:#?}"));
    }

    #[test]
    fn runtime_and_data_path_keep_their_spellings_and_refuse_others() {
        let parsed = |args: &[&str]| parse_clean(args).unwrap();
        assert_eq!(parsed(&["--runtime", "docker"]).runtime, RuntimeChoice::Docker);
        assert_eq!(parsed(&["--runtime", "process"]).runtime, RuntimeChoice::Process);
        assert_eq!(parsed(&["--runtime", "none"]).runtime, RuntimeChoice::None);
        assert_eq!(parsed(&[]).runtime, RuntimeChoice::Auto);
        let e = parse_clean(&["--runtime", "podman"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(e.to_string().contains("podman"), "{e}");
        assert_eq!(
            "podman".parse::<RuntimeChoice>().map_err(|e| e.contains("podman")),
            Err(true)
        );

        assert_eq!(parsed(&["--data-path", "tunnel"]).data_path, DataPath::Tunnel);
        assert_eq!(parsed(&["--data-path", "direct"]).data_path, DataPath::Direct);
        assert!(parse_clean(&["--data-path", "carrier-pigeon"]).is_err());
        let auto = parsed(&[]);
        assert!(auto.uses_tunnel());
        assert!(!parsed(&["--advertise", "10.0.0.5"]).uses_tunnel());
        assert!(parsed(&["--advertise", "10.0.0.5", "--data-path", "tunnel"]).uses_tunnel());
    }

    #[test]
    fn the_decode_limit_is_configurable() {
        assert_eq!(parse_clean(&[]).unwrap().max_message_bytes, 1024 * 1024);
        let c = parse_clean(&["--max-message-bytes", "8388608"]).unwrap();
        assert_eq!(c.max_message_bytes, 8 << 20);
    }

    /// A stand-in engine on a Unix socket: answers each connection with
    /// `reply`, or holds it open in silence (`None`).
    fn engine(dir: &std::path::Path, name: &str, reply: Option<&'static [u8]>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let path = dir.join(format!("{name}.sock"));
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                match reply {
                    Some(r) => {
                        let _ = s.write_all(r).await;
                    }
                    None => held.push(s),
                }
            }
        });
        format!("unix://{}", path.display())
    }

    /// `auto` asks the engine it is pointed at, and only a 200 to the ping
    /// makes it `docker`; explicit choices ask nothing.
    #[tokio::test]
    async fn auto_picks_docker_only_when_the_engine_answers_its_ping() {
        let dir = tempfile::tempdir().unwrap();
        let ok = engine(
            dir.path(),
            "ok",
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"),
        );
        assert_eq!(resolve_runtime(RuntimeChoice::Auto, &ok).await, RuntimeKind::Docker);
        let sick = engine(dir.path(), "sick", Some(b"HTTP/1.1 500 Internal Server Error\r\n\r\n"));
        assert_eq!(resolve_runtime(RuntimeChoice::Auto, &sick).await, RuntimeKind::Process);
        let absent = format!("unix://{}", dir.path().join("absent.sock").display());
        assert_eq!(
            resolve_runtime(RuntimeChoice::Auto, &absent).await,
            RuntimeKind::Process
        );
        assert_eq!(
            resolve_runtime(RuntimeChoice::Auto, "ssh://host").await,
            RuntimeKind::Process
        );
        assert_eq!(resolve_runtime(RuntimeChoice::Process, &ok).await, RuntimeKind::Process);
        assert_eq!(resolve_runtime(RuntimeChoice::None, &ok).await, RuntimeKind::None);
        assert_eq!(
            resolve_runtime(RuntimeChoice::Docker, &absent).await,
            RuntimeKind::Docker
        );
    }

    /// An engine that accepts and never answers is given up on after the
    /// ping limit (paused time: at once).
    #[tokio::test(start_paused = true)]
    async fn a_silent_engine_means_process() {
        let dir = tempfile::tempdir().unwrap();
        let silent = engine(dir.path(), "silent", None);
        let started = tokio::time::Instant::now();
        assert_eq!(
            resolve_runtime(RuntimeChoice::Auto, &silent).await,
            RuntimeKind::Process
        );
        let waited = started.elapsed();
        assert!(
            waited >= DOCKER_PING_LIMIT && waited < DOCKER_PING_LIMIT * 2,
            "{waited:?}"
        );
    }

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(normalize_url("coord:8080"), "http://coord:8080");
        assert_eq!(normalize_url("https://c/"), "https://c");
    }
}
