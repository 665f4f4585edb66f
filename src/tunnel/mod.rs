//! The tunnel data path: HTTP/2 inside a gRPC byte stream that the worker
//! opens, so the coordinator can reach services on a worker behind NAT or a
//! Docker bridge without ever dialing the worker's address.
//!
//! This module is only the wire format both ends share: [`pipe`], the byte
//! pipe over `WorkerControl/Tunnel`, and the header names and HTTP/2
//! settings below. The ends live with their roles:
//! - `coordinator::tunnel`: admits a tunnel and runs the HTTP/2 client on it.
//! - `worker::tunnel`: runs the HTTP/2 server on it and forwards each request
//!   to the local service named by `x-edgeplane-service`; a `CONNECT` opens
//!   a raw byte pipe to that service instead (an HTTP/2 stream copied to a
//!   TCP connection), which the coordinator's HTTP/1 fast path uses as an
//!   upstream connection, so HTTP/1 requests cross the tunnel as bytes.

pub mod pipe;

/// Names the service a tunnelled request is for (set by the coordinator,
/// removed by the worker).
pub const SERVICE_HEADER: &str = "x-edgeplane-service";
/// Set by the worker on a response it made itself because the local
/// service could not be reached (`connect`) or failed before answering
/// (`reset`), so the coordinator can retry on another replica.
pub const FORWARD_ERROR_HEADER: &str = "x-edgeplane-forward-error";
/// On the answer to a `CONNECT` (a raw pipe to a local service): the
/// `Host` and the path prefix requests on the pipe must carry.
pub const PIPE_HOST_HEADER: &str = "x-edgeplane-pipe-host";
pub const PIPE_PREFIX_HEADER: &str = "x-edgeplane-pipe-prefix";
/// Tunnel call metadata: which worker, and its session secret.
pub const WORKER_ID_HEADER: &str = "x-edgeplane-worker-id";
pub const RESUME_TOKEN_HEADER: &str = "x-edgeplane-resume-token";

/// The header list (RFC 9113 6.5.2: names, values and 32 bytes per field)
/// either side of the tunnel accepts in one HEADERS block. The coordinator
/// never sends a larger one: it accepts request heads of at most
/// `proxy::MAX_REQUEST_HEAD`, adds a few headers of its own, and checks the
/// total before a request enters the tunnel. Why it matters: a header block
/// past what the peer's HTTP/2 server decodes is a connection error there,
/// which would fail every request in flight on that worker.
pub const MAX_HEADER_LIST: u32 = 256 * 1024;

/// HTTP/2 streams open at once in one tunnel: tunnelled requests, and raw
/// pipes (each held by a client connection of the coordinator's HTTP/1 fast
/// path until that connection closes). Past it, new ones wait for a free
/// stream until the proxy's connect timeout.
pub const MAX_STREAMS: u32 = 4096;
/// HTTP/2 flow-control windows inside the tunnel: large enough to keep a
/// loopback-fast stream busy, bounded so one slow reader cannot make the
/// other side buffer without limit.
pub const STREAM_WINDOW: u32 = 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
