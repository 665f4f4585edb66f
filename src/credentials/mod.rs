//! What the coordinator keeps about who may join and who may no longer:
//! join tokens ([`tokens`]) and revoked workers ([`revoked`]). Both live in
//! the coordinator's state dir as small JSON files, rewritten whole on each
//! change (changes are operator actions, so rare).

pub mod revoked;
pub mod tokens;

pub use revoked::Revocations;
pub use tokens::{JoinRefusal, JoinTokens, TokenView};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("no join token with id `{0}`")]
    UnknownToken(String),
    #[error("invalid name pattern: {0}")]
    BadPattern(String),
}

fn load<T: serde::de::DeserializeOwned + Default>(path: Option<&std::path::Path>) -> Result<T, StoreError> {
    let Some(path) = path else { return Ok(T::default()) };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn save<T: serde::Serialize>(path: Option<&std::path::Path>, value: &T) -> Result<(), StoreError> {
    let Some(path) = path else { return Ok(()) };
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    crate::tls::files::write_private(path, &bytes).map_err(|e| StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}
