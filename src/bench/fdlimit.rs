//! The open-file limit. Each simulated worker is one socket, so the bench
//! raises its soft `RLIMIT_NOFILE` to the hard limit before it starts; a
//! coordinator it spawns inherits the raised limit. The hard limit is what
//! bounds the largest fleet one process can hold.

use super::error::BenchError;
use rlimit::Resource;

/// The limits after raising: (soft, hard).
pub fn raise_to_hard() -> Result<(u64, u64), BenchError> {
    let (_, hard) = Resource::NOFILE.get().map_err(BenchError::FdLimit)?;
    Resource::NOFILE.set(hard, hard).map_err(BenchError::FdLimit)?;
    Resource::NOFILE.get().map_err(BenchError::FdLimit)
}
