//! This coordinator's id in the cluster, and where its peers reach it.

use super::config::{parse_coordinator_id, ClusterConfig};
use super::error::ClusterError;
use std::net::SocketAddr;
use std::path::Path;

/// The file in `--state-dir` that keeps a generated id across restarts.
const ID_FILE: &str = "coordinator-id";

/// The id given, or the one kept in the state dir, or a new one (the
/// hostname and a random suffix, kept there when there is a state dir).
pub fn coordinator_id(config: &ClusterConfig) -> Result<String, ClusterError> {
    if let Some(id) = &config.coordinator_id {
        return Ok(id.clone());
    }
    let Some(dir) = &config.state_dir else {
        return Ok(generate());
    };
    let path = dir.join(ID_FILE);
    let io = |source| ClusterError::StateDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => parse_coordinator_id(s.trim()).map_err(|e| ClusterError::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = generate();
            std::fs::create_dir_all(dir).map_err(io)?;
            write_new(&path, &id).map_err(io)?;
            Ok(id)
        }
        Err(e) => Err(io(e)),
    }
}

fn write_new(path: &Path, id: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(tmp, path)
}

/// `{hostname}-{6 hex digits}`, cut to fit one key segment.
fn generate() -> String {
    let host: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .take(48)
        .collect();
    let host = if host.is_empty() {
        "coordinator".to_string()
    } else {
        host
    };
    format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Where peers reach this coordinator: as given, else the listen address
/// (`https://` when the port speaks TLS), which must then name a host peers
/// can dial.
pub fn advertise_peer(config: &ClusterConfig, listen: SocketAddr, tls: bool) -> Result<String, ClusterError> {
    let scheme = if tls { "https" } else { "http" };
    if let Some(p) = &config.advertise_peer {
        let uri: http::Uri = p
            .parse()
            .map_err(|_| ClusterError::Config(format!("--advertise-peer `{p}` is not a URL")))?;
        if uri.scheme_str() != Some(scheme) || uri.authority().is_none() {
            return Err(ClusterError::Config(format!(
                "--advertise-peer `{p}`: give {scheme}://HOST:PORT{}",
                if tls { " (the port speaks TLS)" } else { "" }
            )));
        }
        return Ok(p.trim_end_matches('/').to_string());
    }
    if listen.ip().is_unspecified() {
        return Err(ClusterError::Config(format!(
            "listening on {listen}, peers cannot tell where to reach this coordinator: set --advertise-peer {scheme}://HOST:{}",
            listen.port()
        )));
    }
    Ok(format!("{scheme}://{listen}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_id_is_kept_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = ClusterConfig {
            state_dir: Some(dir.path().join("state")),
            ..ClusterConfig::default()
        };
        let first = coordinator_id(&config).unwrap();
        assert!(parse_coordinator_id(&first).is_ok(), "{first}");
        assert_eq!(coordinator_id(&config).unwrap(), first);
        let given = ClusterConfig {
            coordinator_id: Some("c-1".into()),
            ..config.clone()
        };
        assert_eq!(coordinator_id(&given).unwrap(), "c-1");
        // Without a state dir, each start is a new coordinator.
        assert_ne!(generate(), generate());
    }

    #[test]
    fn the_peer_address_must_be_dialable() {
        let c = ClusterConfig::default();
        let at = |c: &ClusterConfig, listen: &str, tls: bool| advertise_peer(c, listen.parse().unwrap(), tls);
        assert_eq!(at(&c, "127.0.0.1:8080", false).unwrap(), "http://127.0.0.1:8080");
        assert_eq!(at(&c, "127.0.0.1:8080", true).unwrap(), "https://127.0.0.1:8080");
        assert!(at(&c, "0.0.0.0:8080", false).is_err());
        let given = ClusterConfig {
            advertise_peer: Some("http://coord-a:8080/".into()),
            ..c
        };
        assert_eq!(at(&given, "0.0.0.0:8080", false).unwrap(), "http://coord-a:8080");
        // A TLS port is not reached with plaintext, nor the other way round.
        let err = at(&given, "0.0.0.0:8080", true).unwrap_err().to_string();
        assert!(err.contains("give https://HOST:PORT"), "{err}");
        for bad in ["coord-a:8080", "https://a:1", "not a url"] {
            let c = ClusterConfig {
                advertise_peer: Some(bad.into()),
                ..ClusterConfig::default()
            };
            assert!(at(&c, "127.0.0.1:1", false).is_err(), "{bad}");
        }
        let tls = ClusterConfig {
            advertise_peer: Some("https://coord-a:8443".into()),
            ..ClusterConfig::default()
        };
        assert_eq!(at(&tls, "0.0.0.0:8443", true).unwrap(), "https://coord-a:8443");
    }
}
