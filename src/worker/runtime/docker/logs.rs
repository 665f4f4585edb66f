//! A service container's log lines, relayed into the worker's log under
//! the worker's and the service's names, colours stripped.

use bollard::query_parameters::LogsOptionsBuilder;
use bollard::Docker;
use tokio_stream::StreamExt;
use tracing::info;

pub(super) fn unix_now() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i32)
}

/// The container's output, line by line, under the worker's and service's names.
pub(super) async fn follow_logs(docker: Docker, id: String, since: i32, worker: String, service: String) {
    let opts = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .since(since)
        .build();
    let mut logs = docker.logs(&id, Some(opts));
    while let Some(Ok(chunk)) = logs.next().await {
        let stream = match chunk {
            bollard::container::LogOutput::StdErr { .. } => "stderr",
            _ => "stdout",
        };
        for line in chunk
            .to_string()
            .lines()
            .map(strip_ansi)
            .filter(|l| !l.trim().is_empty())
        {
            info!(worker = %worker, service = %service, stream, "{line}");
        }
    }
}

/// A line without its terminal colour codes (`ESC [ ... letter`), which
/// would otherwise show up escaped inside the worker's own log line.
pub(super) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
