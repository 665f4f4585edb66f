//! `/metrics`: the exposition passes `promtool check metrics`, each event
//! moves exactly its series (a proxied request, a state transition, a
//! refused session), a real Prometheus server scraping a coordinator reads
//! the true values, and the shipped rules and scrape config check.

mod common;

use common::*;
use edgeplane::coordinator::CoordinatorConfig;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::process::Command;

/// Every sample of the exposition: series (name and labels) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(c: &TestCoordinator) -> String {
    let r = reqwest::get(format!("{}/metrics", c.url)).await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

/// The series that differ between two scrapes, with the change.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, prefix: &str) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

async fn convert(c: &TestCoordinator) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/service/notes/convert", c.url))
        .json(&serde_json::json!({"notes": "x", "client_name": "metrics"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn each_event_moves_exactly_its_series_and_promtool_accepts_the_exposition() {
    let backend = common::backend::start("metrics-replica").await;
    let config = CoordinatorConfig {
        join_token: Some("the-join-token".into()),
        ..fast_config()
    };
    let c = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = c.worker_config("metrics-worker", dir.path());
    cfg.join_token = Some("the-join-token".into());
    cfg.services = vec![("notes".into(), backend.url.clone())];
    cfg.data_path = "direct".parse().unwrap();
    cfg.probe_interval = Duration::from_millis(50);
    let (agent, stop) = start_agent(cfg).await;
    c.watch()
        .await
        .until_service(
            Some("metrics-worker"),
            Some("notes-coa"),
            edgeplane::proto::ServiceState::Ready,
        )
        .await;

    let text = scrape(&c).await;
    let out = {
        use tokio::io::AsyncWriteExt;
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool runs (scripts/test installs prometheus)");
        check.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
        within(check.wait_with_output()).await.unwrap()
    };
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = samples(&text);
    assert!(
        !text.contains("edgeplane_worker_info"),
        "no per-worker series by default"
    );
    assert_eq!(s[r#"edgeplane_workers{state="healthy"}"#], 1.0);
    assert!(s["edgeplane_heartbeats_received_total"] >= 1.0);
    // The worker's stream (HTTP/2) and this scrape's connection (HTTP/1).
    assert!(s[r#"edgeplane_connections{kind="h2"}"#] >= 1.0, "{s:?}");
    assert!(s[r#"edgeplane_connections{kind="http1"}"#] >= 1.0, "{s:?}");
    // The worker reports each round trip it measured in its next keepalive.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while samples(&scrape(&c).await)
        .get("edgeplane_keepalive_round_trip_seconds_count")
        .is_none_or(|n| *n < 1.0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no keepalive round trip reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s[r#"edgeplane_worker_sessions_total{kind="new"}"#], 1.0);
    // The runtime's live tasks: at least the agent's session, the listener and this scrape.
    assert!((3.0..1e6).contains(&s["edgeplane_tokio_tasks"]), "{s:?}");
    assert_eq!(
        s[&format!(r#"edgeplane_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))],
        1.0
    );
    assert_eq!(
        s[r#"edgeplane_service_replicas{service="notes-coa",state="ready"}"#],
        1.0
    );
    assert_eq!(
        s[r#"edgeplane_service_gap{service="notes-coa"}"#], 1.0,
        "one ready replica: warning"
    );

    // One proxied request: its counter and its histogram's count, nothing else.
    let before = samples(&scrape(&c).await);
    assert_eq!(convert(&c).await, 200);
    let after = samples(&scrape(&c).await);
    let proxy = moved(&before, &after, "edgeplane_proxy_");
    let series = r#"edgeplane_proxy_requests_total{service="notes-coa",via="direct",code="200"}"#;
    assert_eq!(proxy.get(series), Some(&1.0), "{proxy:?}");
    assert_eq!(
        proxy.get(r#"edgeplane_proxy_request_duration_seconds_count{service="notes-coa",via="direct"}"#),
        Some(&1.0),
        "{proxy:?}"
    );
    assert!(
        proxy
            .keys()
            .all(|k| k == series || k.starts_with("edgeplane_proxy_request_duration_seconds")),
        "{proxy:?}"
    );
    // A request for no known service: one series under `_unknown`, never
    // the name the client typed.
    let r = reqwest::get(format!("{}/service/no-such-thing/x", c.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = scrape(&c).await;
    assert!(!text.contains("no-such-thing"));
    let later = samples(&text);
    assert_eq!(
        later[r#"edgeplane_proxy_requests_total{service="_unknown",via="none",code="404"}"#],
        1.0
    );

    // A refused session: a bad join token.
    let before = samples(&scrape(&c).await);
    let refused = RawWorker::try_open(c.channel().await, Some("wrong")).await;
    assert!(refused.is_err());
    let after = samples(&scrape(&c).await);
    assert_eq!(
        moved(&before, &after, "edgeplane_worker_sessions_refused"),
        BTreeMap::from([(
            r#"edgeplane_worker_sessions_refused_total{reason="bad_join_token"}"#.to_string(),
            1.0
        )])
    );

    // A state transition: the worker goes, healthy -> disconnected.
    let before = samples(&scrape(&c).await);
    stop.cancel();
    within(agent.join()).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let after = loop {
        let now = samples(&scrape(&c).await);
        if now[r#"edgeplane_workers{state="disconnected"}"#] == 1.0 {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never shows disconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        moved(&before, &after, "edgeplane_worker_state_transitions"),
        BTreeMap::from([(
            r#"edgeplane_worker_state_transitions_total{from="healthy",to="disconnected"}"#.to_string(),
            1.0
        )])
    );
    c.stop().await;
}

/// A real Prometheus scrapes the coordinator every 200 ms; its query API
/// gives the true number of healthy workers and of proxied requests.
#[tokio::test]
async fn prometheus_scrapes_the_true_values() {
    let backend = common::backend::start("prom-replica").await;
    let c = TestCoordinator::start(fast_config()).await;
    let dirs = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for name in ["prom-a", "prom-b"] {
        let mut cfg = c.worker_config(name, dirs.path());
        cfg.services = vec![("notes".into(), backend.url.clone())];
        cfg.data_path = "direct".parse().unwrap();
        cfg.probe_interval = Duration::from_millis(50);
        agents.push(start_agent(cfg).await);
    }
    let mut watch = c.watch().await;
    for name in ["prom-a", "prom-b"] {
        watch
            .until_service(Some(name), Some("notes-coa"), edgeplane::proto::ServiceState::Ready)
            .await;
    }
    let requests = 7;
    for _ in 0..requests {
        assert_eq!(convert(&c).await, 200);
    }

    let dir = tempfile::tempdir().unwrap();
    let web = free_port();
    let config = format!(
        "global:\n  scrape_interval: 200ms\nscrape_configs:\n  - job_name: edgeplane\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
        c.addr.port()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus runs (scripts/test installs it)");
    let query = |q: &'static str| {
        let url = format!("http://127.0.0.1:{web}/api/v1/query");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .query(&[("query", q)])
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (healthy, proxied) = loop {
        let healthy = query(r#"edgeplane_workers{state="healthy"}"#).await;
        let proxied = query(r#"sum(edgeplane_proxy_requests_total{service="notes-coa",code="200"})"#).await;
        if let (Some(h), Some(p)) = (healthy, proxied) {
            break (h, p);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never had the series; its log: {}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(healthy, 2.0);
    assert_eq!(proxied, requests as f64);

    // Every query of the shipped Grafana dashboard is PromQL this
    // Prometheus evaluates, over series the coordinator exposes.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/edgeplane.json")).unwrap(),
    )
    .unwrap();
    // The coordinator's exposition, and every counter family with a sample
    // (a family shows only once it has one: retries, say).
    let every = edgeplane::metrics::CoordinatorMetrics::new(Default::default());
    every.proxy.request(Some("s"), "direct", 200, Duration::from_millis(1));
    every.proxy.retry("s");
    every.proxy.upstream_error("s", "connect");
    every.fleet.transition("healthy", "degraded");
    every.fleet.session(true);
    every.fleet.refused("bad_join_token");
    every.fleet.keepalive_rtt(Duration::from_millis(1));
    let exposition = format!("{}{}", scrape(&c).await, every.encode());
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");
    for expr in &exprs {
        let r: serde_json::Value = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{web}/api/v1/query"))
            .query(&[("query", expr.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{expr}: {r}");
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("edgeplane_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposition
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
                "the dashboard queries `{name}`, which the coordinator does not expose"
            );
            rest = &rest[i + name.len()..];
        }
    }
    let _ = prometheus.kill().await;
    for (agent, stop) in agents {
        stop.cancel();
        within(agent.join()).await;
    }
    c.stop().await;
}

#[tokio::test]
async fn the_shipped_rules_and_scrape_config_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    for args in [
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let out = within(Command::new("promtool").args(&args).current_dir(root).output())
            .await
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn with_a_token_set_metrics_need_it_and_metrics_listen_serves_them_apart() {
    let port = free_port();
    let c = TestCoordinator::start(CoordinatorConfig {
        admin_token: Some("the-admin-token".into()),
        read_token: Some("the-read-token".into()),
        metrics_listen: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ..fast_config()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", c.url);
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let with_read = client.get(&url).bearer_auth("the-read-token").send().await.unwrap();
    assert_eq!(with_read.status(), 200);
    assert!(with_read
        .text()
        .await
        .unwrap()
        .contains("edgeplane_workers{state=\"healthy\"} 0"));
    // The separate listener: no token, the same exposition.
    let apart = format!("http://127.0.0.1:{port}/metrics");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let text = loop {
        if let Ok(r) = client.get(&apart).send().await {
            break r.text().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "--metrics-listen never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(text.contains("edgeplane_build_info"), "{text}");
    c.stop().await;
}

/// A condition on a scrape's samples.
type Holds = dyn Fn(&BTreeMap<String, f64>) -> bool + Send;

/// The worker agent's own `/metrics` on `--metrics-listen`: its services'
/// states, keepalive round trips, and a reconnect when its coordinator goes.
#[tokio::test]
async fn the_agent_serves_its_own_metrics() {
    let backend = common::backend::start("agent-replica").await;
    let c = TestCoordinator::start(fast_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cfg = c.worker_config("agent-metrics", dir.path());
    cfg.services = vec![("notes".into(), backend.url.clone())];
    cfg.data_path = "direct".parse().unwrap();
    cfg.probe_interval = Duration::from_millis(50);
    cfg.metrics_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let (agent, stop) = start_agent(cfg).await;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let until = |what: &'static str, f: Box<Holds>| {
        let url = url.clone();
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                if let Ok(r) = reqwest::get(&url).await {
                    let s = samples(&r.text().await.unwrap());
                    if f(&s) {
                        return s;
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the agent's metrics never showed {what}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(
        "a ready service and a keepalive round trip",
        Box::new(|s| {
            s.get(r#"edgeplane_agent_service_state{service="notes-coa",state="ready"}"#) == Some(&1.0)
                && s.get("edgeplane_agent_keepalive_round_trip_seconds_count")
                    .is_some_and(|n| *n >= 1.0)
        }),
    )
    .await;
    c.stop().await;
    let s = until(
        "a reconnect",
        Box::new(|s| {
            s.get(r#"edgeplane_agent_reconnects_total{cause="session_lost"}"#)
                .is_some_and(|n| *n >= 1.0)
        }),
    )
    .await;
    assert_eq!(s.get("edgeplane_agent_service_restarts_total"), Some(&0.0));
    assert!(s.contains_key(&format!(
        r#"edgeplane_agent_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    )));
    stop.cancel();
    within(agent.join()).await;
}

#[tokio::test]
async fn per_worker_series_come_with_their_flag() {
    let c = TestCoordinator::start(CoordinatorConfig {
        metrics_per_worker: true,
        ..fast_config()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (agent, stop) = c.worker("per-worker-1", dir.path()).await;
    let id = agent.status().borrow().worker_id.clone().unwrap();
    let s = samples(&scrape(&c).await);
    assert_eq!(
        s.get(&format!(
            r#"edgeplane_worker_info{{worker_id="{id}",name="per-worker-1",state="healthy"}}"#
        )),
        Some(&1.0),
        "{s:?}"
    );
    assert!(s.contains_key(&format!(r#"edgeplane_worker_last_heard_seconds{{worker_id="{id}"}}"#)));
    stop.cancel();
    within(agent.join()).await;
    c.stop().await;
}

/// `edgeplane_tunnel_streams`: a request in progress down a worker's tunnel
/// counts until its body has been sent on; the fast path's raw pipe counts
/// while it is open.
#[tokio::test]
async fn tunnel_streams_count_what_is_open_on_tunnels() {
    let backend = common::backend::start("tunnel-replica").await;
    let streams = |text: &str| samples(text).get("edgeplane_tunnel_streams").copied();
    // The hyper path: one stream per request.
    let full = CoordinatorConfig {
        http1_fast_path: false,
        ..fast_config()
    };
    let (c, _worker) = notes_routed_to(&backend.url, full, "tunnel").await;
    assert_eq!(streams(&scrape(&c).await), Some(0.0));
    let mut held = reqwest::get(format!("{}/service/notes/stream", c.url)).await.unwrap();
    let first = within(held.chunk()).await.unwrap();
    assert!(first.is_some(), "the first chunk came through");
    assert_eq!(streams(&scrape(&c).await), Some(1.0), "the request in progress");
    backend.state.release.notify_one();
    while within(held.chunk()).await.unwrap().is_some() {}
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while streams(&scrape(&c).await) != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finished request still counts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop().await;

    // The fast path: a raw pipe, kept for the client connection's next request.
    let (c, _worker) = notes_routed_to(&backend.url, fast_config(), "tunnel").await;
    assert_eq!(convert(&c).await, 200);
    assert_eq!(streams(&scrape(&c).await), Some(1.0), "the pipe is kept open");
    c.stop().await;
}
