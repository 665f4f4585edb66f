//! `edgeplane services` and `edgeplane gaps`: the catalog as the fleet
//! serves it, over the Admin API's `ListServices` and `ListGaps`. `--json`
//! prints the shapes of `GET /api/admin/services` and `/api/admin/gaps`
//! (same fields, same order), so one `jq` line reads either.

use crate::admin_cli::{client, columns, with_auth, AdminTarget, CliError};
use crate::json::status_str;
use crate::proto::{Gap, ListGapsRequest, ListServicesRequest, Service, ServiceState};
use crate::registry::service_state_str;
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct ServicesArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Print JSON (the same shape as GET /api/admin/services).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GapsArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Print JSON (the same shape as GET /api/admin/gaps).
    #[arg(long)]
    pub json: bool,
}

/// Runs `edgeplane services`; returns what to print.
pub async fn services(args: &ServicesArgs) -> Result<String, CliError> {
    let (mut c, auth) = client(&args.target).await?;
    let list = c
        .list_services(with_auth(ListServicesRequest {}, &auth))
        .await?
        .into_inner()
        .services;
    if args.json {
        let v: Vec<JsonServiceInfo> = list.iter().map(JsonServiceInfo::from).collect();
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    Ok(services_table(&list))
}

/// Runs `edgeplane gaps`; returns what to print.
pub async fn gaps(args: &GapsArgs) -> Result<String, CliError> {
    let (mut c, auth) = client(&args.target).await?;
    let list = c
        .list_gaps(with_auth(ListGapsRequest {}, &auth))
        .await?
        .into_inner()
        .gaps;
    if args.json {
        let v: Vec<JsonGap> = list.iter().map(JsonGap::from).collect();
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    Ok(gaps_table(&list))
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn state_name(raw: i32) -> &'static str {
    service_state_str(ServiceState::try_from(raw).unwrap_or(ServiceState::Unspecified))
}

/// SERVICE, ALIASES, REQUIRES, PRIORITY, PORT, READY, GAP, PROVIDERS; a
/// provider reads `worker(state)`, with its worker's status added when
/// that worker is not healthy, and `!` when it takes no traffic.
pub fn services_table(services: &[Service]) -> String {
    let header = [
        "SERVICE",
        "ALIASES",
        "REQUIRES",
        "PRIORITY",
        "PORT",
        "READY",
        "GAP",
        "PROVIDERS",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for s in services {
        let providers = s
            .providers
            .iter()
            .map(|p| {
                let worker_status = status_str(p.worker_status);
                let mut state = state_name(p.state).to_string();
                if worker_status != "healthy" {
                    state = format!("{state},{worker_status}");
                }
                let mark = if p.routable { "" } else { "!" };
                format!("{}({state}){mark}", p.worker)
            })
            .collect::<Vec<_>>()
            .join(" ");
        let catalog = |v: String| if s.in_catalog { v } else { "-".into() };
        rows.push(vec![
            s.name.clone(),
            dash_if_empty(s.aliases.join(",")),
            dash_if_empty(s.requires.clone()),
            catalog(s.priority.to_string()),
            catalog(s.port.to_string()),
            s.ready.to_string(),
            s.gap.clone(),
            dash_if_empty(providers),
        ]);
    }
    let mut out = columns(&rows);
    if services.is_empty() {
        out.push_str("(no services)\n");
    }
    out
}

/// SERVICE, STATUS, READY, PROVIDERS, PRIORITY, REASON, in the
/// coordinator's order (most urgent first).
pub fn gaps_table(gaps: &[Gap]) -> String {
    let header = ["SERVICE", "STATUS", "READY", "PROVIDERS", "PRIORITY", "REASON"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for g in gaps {
        rows.push(vec![
            g.service.clone(),
            g.status.clone(),
            g.ready.to_string(),
            g.providers.to_string(),
            g.priority.map_or("-".into(), |p| p.to_string()),
            g.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = columns(&rows);
    if gaps.is_empty() {
        out.push_str("(no services)\n");
    }
    out
}

/// One entry of `GET /api/admin/services`.
#[derive(Debug, Serialize)]
pub struct JsonServiceInfo {
    pub name: String,
    pub aliases: Vec<String>,
    pub requires: String,
    pub priority: Option<u32>,
    pub port: Option<u32>,
    pub in_catalog: bool,
    pub ready: u32,
    pub providers: Vec<JsonProvider>,
}

#[derive(Debug, Serialize)]
pub struct JsonProvider {
    pub worker_id: String,
    pub worker: String,
    pub worker_status: &'static str,
    pub state: &'static str,
    pub message: String,
    pub routable: bool,
}

/// One entry of `GET /api/admin/gaps`.
#[derive(Debug, Serialize)]
pub struct JsonGap {
    pub service: String,
    pub status: String,
    pub ready: u32,
    pub providers: u32,
    pub reason: Option<String>,
    pub priority: Option<u32>,
}

impl From<&Service> for JsonServiceInfo {
    fn from(s: &Service) -> Self {
        // The wire has no "unset" for these two; only catalog entries have them.
        let catalog = |v: u32| s.in_catalog.then_some(v);
        JsonServiceInfo {
            name: s.name.clone(),
            aliases: s.aliases.clone(),
            requires: s.requires.clone(),
            priority: catalog(s.priority),
            port: catalog(s.port),
            in_catalog: s.in_catalog,
            ready: s.ready,
            providers: s
                .providers
                .iter()
                .map(|p| JsonProvider {
                    worker_id: p.worker_id.clone(),
                    worker: p.worker.clone(),
                    worker_status: status_str(p.worker_status),
                    state: state_name(p.state),
                    message: p.message.clone(),
                    routable: p.routable,
                })
                .collect(),
        }
    }
}

impl From<&Gap> for JsonGap {
    fn from(g: &Gap) -> Self {
        JsonGap {
            service: g.service.clone(),
            status: g.status.clone(),
            ready: g.ready,
            providers: g.providers,
            reason: g.reason.clone(),
            priority: g.priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ServiceProvider, WorkerStatus};

    fn notes() -> Service {
        Service {
            name: "notes-coa".into(),
            aliases: vec!["notes".into()],
            requires: "cpu".into(),
            priority: 3,
            port: 8100,
            in_catalog: true,
            ready: 1,
            gap: "warning".into(),
            providers: vec![
                ServiceProvider {
                    worker_id: "w-1".into(),
                    worker: "cpu-1".into(),
                    worker_status: WorkerStatus::Healthy as i32,
                    state: ServiceState::Ready as i32,
                    routable: true,
                    ..Default::default()
                },
                ServiceProvider {
                    worker_id: "w-2".into(),
                    worker: "cpu-2".into(),
                    worker_status: WorkerStatus::Draining as i32,
                    state: ServiceState::Ready as i32,
                    routable: false,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn services_table_shows_providers_and_marks_the_unroutable() {
        let declared = Service {
            name: "custom".into(),
            gap: "critical".into(),
            ..Default::default()
        };
        let t = services_table(&[notes(), declared]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("SERVICE") && lines[0].ends_with("PROVIDERS"),
            "{t}"
        );
        let words: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            words,
            [
                "notes-coa",
                "notes",
                "cpu",
                "3",
                "8100",
                "1",
                "warning",
                "cpu-1(ready)",
                "cpu-2(ready,draining)!"
            ]
        );
        let words: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(words, ["custom", "-", "-", "-", "-", "0", "critical", "-"], "{t}");
        assert!(services_table(&[]).contains("(no services)"));
    }

    #[test]
    fn gaps_table_shows_the_reason_when_nothing_is_ready() {
        let gaps = [
            Gap {
                service: "llm-inference".into(),
                status: "critical".into(),
                reason: Some("none_placed".into()),
                priority: Some(1),
                ..Default::default()
            },
            Gap {
                service: "custom".into(),
                status: "ok".into(),
                ready: 2,
                providers: 2,
                ..Default::default()
            },
        ];
        let t = gaps_table(&gaps);
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows[0],
            ["SERVICE", "STATUS", "READY", "PROVIDERS", "PRIORITY", "REASON"]
        );
        assert_eq!(rows[1], ["llm-inference", "critical", "0", "0", "1", "none_placed"]);
        assert_eq!(rows[2], ["custom", "ok", "2", "2", "-", "-"]);
    }

    #[test]
    fn json_leaves_catalog_fields_unset_for_declared_services() {
        let v = serde_json::to_value(JsonServiceInfo::from(&notes())).unwrap();
        assert_eq!(v["priority"], 3);
        assert_eq!(v["providers"][1]["worker_status"], "draining");
        assert_eq!(v["providers"][1]["state"], "ready");
        let declared = Service {
            name: "custom".into(),
            ..Default::default()
        };
        let v = serde_json::to_value(JsonServiceInfo::from(&declared)).unwrap();
        assert!(v["priority"].is_null() && v["port"].is_null(), "{v}");
    }
}
