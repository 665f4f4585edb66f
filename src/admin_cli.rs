//! `edgeplane workers` and `edgeplane drain`: the operator's side of the
//! Admin API, over gRPC, honouring `COORDINATOR_URL` and `EDGEPLANE_ADMIN_TOKEN`.
//! The connection, the errors and the table layout here are shared by the
//! other operator commands (`views_cli`, `watch_table`, `credentials_cli`).

use crate::json::{status_str, JsonWorker};
use crate::proto::{admin_client::AdminClient, DrainWorkerRequest, ListWorkersRequest, Worker};
use crate::registry::{service_state_str, WorkerState};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone, clap::Args)]
pub struct AdminTarget {
    /// The coordinator to ask.
    #[arg(long, env = "COORDINATOR_URL", default_value = "http://127.0.0.1:8080")]
    pub coordinator: String,
    /// Admin token, when the coordinator requires one.
    #[arg(long, env = "EDGEPLANE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM CA to trust for an `https://` coordinator (system roots otherwise).
    #[arg(long = "ca-cert", env = "EDGEPLANE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate with the admin role (`edgeplane ca admin`).
    #[arg(long = "cert", env = "EDGEPLANE_ADMIN_CERT", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM key of --cert.
    #[arg(long = "key", env = "EDGEPLANE_ADMIN_KEY", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Print JSON (the same shape as GET /api/admin/workers).
    #[arg(long)]
    pub json: bool,
    /// Only workers in this state: healthy, degraded, disconnected, draining.
    #[arg(long)]
    pub status: Option<String>,
    /// Keep the table up, redrawn whenever the fleet changes (from the
    /// WatchWorkers stream); with --json, the fleet as one JSON line per
    /// change. Ends on Ctrl-C or when the coordinator ends the stream.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Worker id, or name when unique.
    pub worker: String,
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the coordinator at {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("unknown status `{0}`; use healthy, degraded, disconnected or draining")]
    BadStatus(String),
    #[error("invalid admin token: {0}")]
    BadToken(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

fn code_name(c: tonic::Code) -> String {
    format!("{c:?}").to_uppercase()
}

pub(crate) async fn client(
    t: &AdminTarget,
) -> Result<
    (
        AdminClient<Channel>,
        Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    ),
    CliError,
> {
    let url = crate::parse::normalize_url(&t.coordinator);
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(|source| CliError::Connect {
        url: url.clone(),
        source,
    })?;
    if url.starts_with("https://") {
        let tls = crate::tls::client::ClientTls::from_files(t.ca_cert.as_deref(), t.cert.as_deref(), t.key.as_deref())
            .map_err(|e| CliError::Tls(e.to_string()))?;
        let host = endpoint.uri().host().unwrap_or_default().to_string();
        endpoint = endpoint
            .tls_config(tls.tonic(&host))
            .map_err(|e| CliError::Tls(e.to_string()))?;
    }
    // The timeout bounds each answer's arrival, not a watch's stream; the
    // pings end a watch whose coordinator vanished without closing it.
    let ch = endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|source| CliError::Connect { url, source })?;
    let auth = match t.admin_token.as_deref().filter(|s| !s.is_empty()) {
        Some(tok) => Some(
            crate::auth::bearer(tok)
                .parse()
                .map_err(|_| CliError::BadToken("not a valid header value".into()))?,
        ),
        None => None,
    };
    Ok((AdminClient::new(ch), auth))
}

pub(crate) fn with_auth<T>(
    msg: T,
    auth: &Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(a) = auth {
        r.metadata_mut().insert("authorization", a.clone());
    }
    r
}

/// The wire status `--status` names (0, unspecified: all).
pub(crate) fn status_arg(status: Option<&str>) -> Result<i32, CliError> {
    match status {
        None => Ok(0),
        Some(s) => Ok(WorkerState::parse(s)
            .ok_or_else(|| CliError::BadStatus(s.into()))?
            .to_proto() as i32),
    }
}

/// Runs `edgeplane workers`; returns what to print.
pub async fn workers(args: &WorkersArgs) -> Result<String, CliError> {
    let status = status_arg(args.status.as_deref())?;
    let (mut c, auth) = client(&args.target).await?;
    let list = c
        .list_workers(with_auth(ListWorkersRequest { status }, &auth))
        .await?
        .into_inner()
        .workers;
    if args.json {
        let v: Vec<JsonWorker> = list.iter().map(JsonWorker::from).collect();
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    Ok(render_table(&list))
}

/// Runs `edgeplane drain`; returns what to print.
pub async fn drain(args: &DrainArgs) -> Result<String, CliError> {
    let (mut c, auth) = client(&args.target).await?;
    let req = DrainWorkerRequest {
        worker: args.worker.clone(),
        reason: args.reason.clone(),
    };
    let w = c.drain_worker(with_auth(req, &auth)).await?.into_inner();
    Ok(format!("{} ({}) is {}\n", w.name, w.worker_id, status_str(w.status)))
}

/// A table a person can read: NAME, ID, STATUS, AGE, LAST SEEN, SERVICES,
/// and, in a cluster, COORDINATOR (the one holding each worker).
pub fn render_table(workers: &[Worker]) -> String {
    let clustered = workers.iter().any(|w| !w.coordinator.is_empty());
    let mut header = ["NAME", "ID", "STATUS", "AGE", "LAST SEEN", "SERVICES"]
        .map(String::from)
        .to_vec();
    if clustered {
        header.insert(3, "COORDINATOR".into());
    }
    let mut rows = vec![header];
    for w in workers {
        let services = w
            .services
            .iter()
            .map(|s| {
                let st = crate::proto::ServiceState::try_from(s.state).unwrap_or_default();
                format!("{}({})", s.name, service_state_str(st))
            })
            .collect::<Vec<_>>()
            .join(" ");
        let mut row = vec![
            w.name.clone(),
            w.worker_id.clone(),
            status_str(w.status).to_string(),
            crate::duration::format_short(Duration::from_secs_f64(w.age_seconds.max(0.0))),
            format!(
                "{} ago",
                crate::duration::format_short(Duration::from_secs_f64(w.silent_seconds.max(0.0)))
            ),
            if services.is_empty() { "-".into() } else { services },
        ];
        if clustered {
            let holder = if w.coordinator.is_empty() { "-" } else { &w.coordinator };
            row.insert(3, holder.to_string());
        }
        rows.push(row);
    }
    let mut out = columns(&rows);
    if workers.is_empty() {
        out.push_str("(no workers)\n");
    }
    out
}

/// Rows (the first one the header) as left-aligned columns two spaces
/// apart, each line without trailing blanks: the layout of every table
/// the CLI prints.
pub(crate) fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ServiceView, WorkerStatus};

    #[test]
    fn table_lists_each_worker_with_its_services() {
        let w = Worker {
            worker_id: "w-1".into(),
            name: "gpu-box".into(),
            status: WorkerStatus::Healthy as i32,
            age_seconds: 65.0,
            silent_seconds: 1.0,
            services: vec![ServiceView {
                name: "notes-coa".into(),
                state: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = render_table(&[w]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].contains("gpu-box") && lines[1].contains("w-1") && lines[1].contains("healthy"));
        assert!(lines[1].contains("notes-coa(ready)") && lines[1].contains("1m05s"));
        assert!(render_table(&[]).contains("(no workers)"));
        assert!(!lines[0].contains("COORDINATOR"), "alone, no coordinator column");

        let held = Worker {
            coordinator: "coord-b".into(),
            ..Default::default()
        };
        let t = render_table(&[held, Worker::default()]);
        let lines: Vec<&str> = t.lines().collect();
        let col = lines[0].find("COORDINATOR").expect("a coordinator column in a cluster");
        assert_eq!(&lines[1][col..col + 7], "coord-b");
        assert_eq!(&lines[2][col..col + 1], "-", "held by none");
    }
}
