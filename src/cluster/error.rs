//! Why a coordinator could not join, or stay in, its cluster.

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd at {endpoints}: {source}")]
    Etcd {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints} did not answer within {waited:?}; is it running?")]
    Unreachable {
        endpoints: String,
        waited: std::time::Duration,
    },
    #[error("another live coordinator already uses the id `{0}` in this cluster; give each its own --coordinator-id")]
    IdTaken(String),
    #[error("state dir {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}
