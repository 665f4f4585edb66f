//! Everything the coordinator can be told, read in one place. Every
//! environment variable has a flag twin; durations accept seconds or
//! `500ms` / `5s` / `10m`.

use crate::duration::parse_duration;
use clap::builder::TypedValueParser as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Enough for a host running many workers that all reconnect at once (a
/// coordinator restart), few enough that one address holds a sliver of
/// the total pool.
pub const DEFAULT_MAX_PENDING_HANDSHAKES_PER_ADDRESS: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorConfig {
    /// Where to serve gRPC and HTTP: a port alone (all interfaces) or HOST:PORT.
    #[arg(long = "listen", env = "PORT", default_value = "8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// A connected worker silent this long is `degraded` (and gets no traffic).
    #[arg(long, env = "HEARTBEAT_TIMEOUT_SECONDS", default_value = "300", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// A worker silent this long (connected or not) is removed.
    #[arg(long, env = "WORKER_TIMEOUT_SECONDS", default_value = "600", value_parser = parse_duration)]
    pub worker_timeout: Duration,

    /// How often workers are told to send a keepalive.
    #[arg(long, env = "KEEPALIVE_INTERVAL_SECONDS", default_value = "5", value_parser = parse_duration)]
    pub keepalive_interval: Duration,

    /// Shared secret workers must present (`authorization: Bearer ...`) to connect.
    #[arg(long, env = "EDGEPLANE_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,

    /// Secret for the Admin API and /api/admin/*; unset means open.
    #[arg(long, env = "EDGEPLANE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Worker records held at most (connected or waiting to resume).
    #[arg(long, env = "EDGEPLANE_MAX_WORKERS", default_value_t = 20_000)]
    pub max_workers: usize,

    /// Open TCP connections at most (workers, operators and proxied clients
    /// together); past it new connections are closed at once.
    #[arg(long, env = "EDGEPLANE_MAX_CONNECTIONS", default_value_t = 25_000)]
    pub max_connections: usize,

    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "EDGEPLANE_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Connect streams allowed to wait for their Hello at once.
    #[arg(long, env = "EDGEPLANE_MAX_PENDING_HANDSHAKES", default_value_t = 1024)]
    pub max_pending_handshakes: usize,

    /// Of those, streams from one source address (IPv6: one /64) at most;
    /// past it that address's next streams are refused at once, so one peer
    /// cannot keep every other worker out.
    #[arg(long, env = "EDGEPLANE_MAX_PENDING_HANDSHAKES_PER_ADDRESS", default_value_t = DEFAULT_MAX_PENDING_HANDSHAKES_PER_ADDRESS)]
    pub max_pending_handshakes_per_address: usize,

    /// A Connect stream that sends no Hello within this is ended.
    #[arg(long, env = "EDGEPLANE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// An HTTP/1 connection whose next request head has not arrived this
    /// long after the previous response (idle keep-alive, or a slow sender)
    /// is closed.
    #[arg(long, env = "EDGEPLANE_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// Serve `/service/` requests from HTTP/1 clients with the byte-level
    /// fast path (`proxy::h1`; raw pipes through tunnels). Off: hyper serves
    /// them, as it serves everything the fast path hands over. The env var
    /// turns it off with `true`, `1`, `yes` or `on`; `false`, `0`, `no` or
    /// `off` keep it on.
    //
    // The flag and the env var say "no fast path", so the raw value is parsed
    // in that sense and inverted into this field, which says whether the fast
    // path is on. `SetFalse` cannot do this: clap stores an env var's value
    // as it is for `SetFalse`, which inverted the env var and refused `1`.
    #[arg(
        long = "no-http1-fast-path",
        env = "EDGEPLANE_NO_HTTP1_FAST_PATH",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new().map(fast_path_unless_no)
    )]
    pub http1_fast_path: bool,

    /// On SIGINT/SIGTERM: how long streams get to close before connections are cut.
    #[arg(long, env = "EDGEPLANE_SHUTDOWN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// HTTP/2 ping interval, so a dead TCP path is noticed while nothing is sent.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE", default_value = "20s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    #[arg(long, env = "EDGEPLANE_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// Service catalog (TOML) replacing the embedded default.
    #[arg(long, env = "EDGEPLANE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// A disconnected worker keeps its placed services this long before they
    /// are placed elsewhere (a quick reconnect should not move a loaded model).
    #[arg(long, env = "EDGEPLANE_PLACEMENT_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub placement_grace: Duration,

    /// Proxy: time to the upstream's response head, unless the catalog sets one.
    #[arg(long, env = "EDGEPLANE_PROXY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub proxy_timeout: Duration,

    /// Proxy: time to connect to a replica before trying another.
    #[arg(long, env = "EDGEPLANE_PROXY_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub proxy_connect_timeout: Duration,

    /// Proxy: extra attempts on other replicas after a connect failure or reset.
    #[arg(long, env = "EDGEPLANE_PROXY_RETRIES", default_value_t = 2)]
    pub proxy_retries: u32,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "EDGEPLANE_MAX_STREAMS_PER_CONNECTION", default_value_t = 1024)]
    pub max_streams_per_connection: u32,
}

impl Default for CoordinatorConfig {
    /// The same values as the flags' defaults, for tests and embedding.
    fn default() -> Self {
        CoordinatorConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            heartbeat_timeout: Duration::from_secs(300),
            worker_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(5),
            join_token: None,
            admin_token: None,
            max_workers: 20_000,
            max_connections: 25_000,
            max_message_bytes: 1024 * 1024,
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_address: DEFAULT_MAX_PENDING_HANDSHAKES_PER_ADDRESS,
            handshake_timeout: Duration::from_secs(5),
            http_idle_timeout: Duration::from_secs(60),
            http1_fast_path: true,
            shutdown_grace: Duration::from_secs(5),
            http2_keepalive_interval: Duration::from_secs(20),
            http2_keepalive_timeout: Duration::from_secs(10),
            max_streams_per_connection: 1024,
            catalog: None,
            placement_grace: Duration::from_secs(30),
            proxy_timeout: Duration::from_secs(30),
            proxy_connect_timeout: Duration::from_secs(2),
            proxy_retries: 2,
        }
    }
}

/// A configuration that cannot work, found before anything is served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("keepalive interval ({0:?}) must be shorter than the heartbeat timeout ({1:?})")]
    KeepaliveTooSlow(Duration, Duration),
    #[error("heartbeat timeout ({0:?}) must not exceed the worker timeout ({1:?})")]
    HeartbeatAfterRemoval(Duration, Duration),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl CoordinatorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keepalive_interval.is_zero() {
            return Err(ConfigError::Zero("keepalive interval"));
        }
        if self.max_workers == 0 {
            return Err(ConfigError::Zero("max workers"));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::Zero("max connections"));
        }
        if self.max_pending_handshakes == 0 {
            return Err(ConfigError::Zero("max pending handshakes"));
        }
        if self.max_pending_handshakes_per_address == 0 {
            return Err(ConfigError::Zero("max pending handshakes per address"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Zero("handshake timeout"));
        }
        if self.http_idle_timeout.is_zero() {
            return Err(ConfigError::Zero("HTTP idle timeout"));
        }
        if self.keepalive_interval >= self.heartbeat_timeout {
            return Err(ConfigError::KeepaliveTooSlow(
                self.keepalive_interval,
                self.heartbeat_timeout,
            ));
        }
        if self.heartbeat_timeout > self.worker_timeout {
            return Err(ConfigError::HeartbeatAfterRemoval(
                self.heartbeat_timeout,
                self.worker_timeout,
            ));
        }
        Ok(())
    }
}

/// `--no-http1-fast-path` / `EDGEPLANE_NO_HTTP1_FAST_PATH` say "no"; the
/// config field says whether the fast path is on.
fn fast_path_unless_no(no: bool) -> bool {
    !no
}

/// `8080` means every interface on port 8080; `127.0.0.1:0` is taken as is.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    s.parse().map_err(|_| format!("`{s}` is neither a port nor HOST:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_port_or_address() {
        assert_eq!(parse_listen("9000").unwrap(), "0.0.0.0:9000".parse().unwrap());
        assert_eq!(parse_listen("127.0.0.1:0").unwrap(), "127.0.0.1:0".parse().unwrap());
        assert!(parse_listen("localhost").is_err());
    }

    /// The flag and the env var together, in one test: the env var's name is
    /// fixed, and this is the only test in the crate that parses the
    /// coordinator's flags, so nothing else reads it while it is set.
    #[test]
    fn the_fast_path_is_on_unless_turned_off() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            c: CoordinatorConfig,
        }
        use clap::Parser as _;
        const VAR: &str = "EDGEPLANE_NO_HTTP1_FAST_PATH";
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("coordinator").chain(args.iter().copied()));
        std::env::remove_var(VAR);
        let on = parse(&[]).unwrap().c;
        assert!(on.http1_fast_path && CoordinatorConfig::default().http1_fast_path);
        let off = parse(&["--no-http1-fast-path"]).unwrap().c;
        assert!(!off.http1_fast_path);

        // The env var means what its name says, in the usual spellings.
        let mut wrong = Vec::new();
        for (value, fast_path) in [
            ("true", false),
            ("1", false),
            ("yes", false),
            ("on", false),
            ("TRUE", false),
            ("false", true),
            ("0", true),
            ("no", true),
            ("off", true),
        ] {
            std::env::set_var(VAR, value);
            match parse(&[]) {
                Ok(cli) if cli.c.http1_fast_path == fast_path => {}
                other => wrong.push(format!(
                    "{VAR}={value}: {:?}",
                    other.map(|c| c.c.http1_fast_path).map_err(|e| e.kind())
                )),
            }
        }
        // The flag wins over the env var.
        std::env::set_var(VAR, "false");
        let flag_wins = parse(&["--no-http1-fast-path"])
            .map(|c| c.c.http1_fast_path)
            .map_err(|e| e.kind());
        std::env::set_var(VAR, "maybe");
        let nonsense = parse(&[]).map(|c| c.c.http1_fast_path).map_err(|e| e.kind());
        std::env::remove_var(VAR);
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert!(matches!(flag_wins, Ok(false)), "{flag_wins:?}");
        assert!(nonsense.is_err(), "`maybe` is not a boolean: {nonsense:?}");
    }

    #[test]
    fn inconsistent_timeouts_are_refused() {
        let mut c = CoordinatorConfig::default();
        assert_eq!(c.validate(), Ok(()));
        c.keepalive_interval = c.heartbeat_timeout;
        assert!(matches!(c.validate(), Err(ConfigError::KeepaliveTooSlow(..))));
        let c = CoordinatorConfig {
            worker_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::HeartbeatAfterRemoval(..))));
    }
}
