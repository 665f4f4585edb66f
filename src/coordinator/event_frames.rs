//! The wire shapes of `GET /api/admin/events`, kept pure (no I/O, no
//! locks) so that what a browser parses is tested without a server.
//!
//! Two event types go out:
//! - `snapshot`: the whole fleet, in parts of at most [`SNAPSHOT_PART`]
//!   workers (`{"first":true,"last":false,"workers":[...]}`), so that no
//!   single frame grows with the fleet. Only the last part carries an
//!   `id:`, so a client cut off mid-snapshot never resumes from half of one.
//! - `change`: one worker added, updated or removed
//!   (`{"kind":"updated","reason":"stream closed by worker","worker":{...}}`),
//!   each with its own `id:`.
//!
//! Every worker is a [`JsonWorker`], the shape `GET /api/admin/workers`
//! serves, wrapped with what only the event stream knows: the reason for
//! its current status and how long each loading service has been loading.

use super::event_notes::Note;
use crate::json::JsonWorker;
use crate::registry::{ChangeKind, WorkerView};
use serde::Serialize;
use std::collections::BTreeMap;

/// Workers per `snapshot` part: about 1 KiB each, so a part stays well
/// under a megabyte however large the fleet.
pub const SNAPSHOT_PART: usize = 500;

/// One worker as the event stream shows it.
#[derive(Debug, Serialize)]
pub struct StreamWorker {
    pub worker: JsonWorker,
    /// Why the worker is in its current status (`stream closed by worker`,
    /// `resumed by resume token`); empty when the coordinator never saw
    /// the change (it happened before this coordinator started).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Seconds the worker had been in its status when the frame was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_seconds: Option<f64>,
    /// Seconds each `loading` service had been loading, as this
    /// coordinator has seen it, when the frame was built.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub loading_seconds: BTreeMap<String, f64>,
}

impl StreamWorker {
    pub fn new(view: &WorkerView, note: Note) -> Self {
        StreamWorker {
            worker: JsonWorker::from(&view.to_proto()),
            reason: note.reason,
            status_seconds: note.status_seconds,
            loading_seconds: note.loading_seconds,
        }
    }
}

#[derive(Serialize)]
struct SnapshotPart<'a> {
    first: bool,
    last: bool,
    workers: &'a [StreamWorker],
}

/// The data of one `snapshot` part.
pub fn snapshot_part(first: bool, last: bool, workers: &[StreamWorker]) -> String {
    json(&SnapshotPart { first, last, workers })
}

#[derive(Serialize)]
struct Change<'a> {
    kind: &'static str,
    /// What the registry said changed (`service notes loading -> ready`).
    change: &'a str,
    #[serde(flatten)]
    worker: &'a StreamWorker,
}

/// The data of one `change` event. A removed worker's status reads
/// `removed`, as in `WatchWorkers`.
pub fn change(kind: ChangeKind, change_reason: &str, worker: &StreamWorker) -> String {
    json(&Change {
        kind: kind_str(kind),
        change: change_reason,
        worker,
    })
}

pub fn kind_str(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "added",
        ChangeKind::Updated => "updated",
        ChangeKind::Removed => "removed",
    }
}

fn json(v: &impl Serialize) -> String {
    // Serializing plain structs of strings and numbers cannot fail; an
    // empty object is a safe frame should it ever.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// An event id: this coordinator run's tag and the event's sequence
/// number. The tag keeps a browser that reconnects to a restarted (or a
/// different) coordinator from resuming at a number that meant another
/// history there.
pub fn event_id(run: &str, seq: u64) -> String {
    format!("{run}-{seq}")
}

/// The sequence number in a `Last-Event-ID`, if it names this run.
pub fn parse_event_id(run: &str, raw: &str) -> Option<u64> {
    let (tag, seq) = raw.trim().rsplit_once('-')?;
    if tag != run {
        return None;
    }
    seq.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_name_their_run() {
        assert_eq!(event_id("a1b2", 7), "a1b2-7");
        assert_eq!(parse_event_id("a1b2", "a1b2-7"), Some(7));
        assert_eq!(parse_event_id("a1b2", " a1b2-7 "), Some(7));
        assert_eq!(parse_event_id("a1b2", "ffff-7"), None, "another run's history");
        assert_eq!(parse_event_id("a1b2", "a1b2-x"), None);
        assert_eq!(parse_event_id("a1b2", "a1b2--1"), None);
        assert_eq!(parse_event_id("a1b2", "7"), None);
        assert_eq!(parse_event_id("a1b2", ""), None);
    }

    #[test]
    fn a_part_is_one_line_of_json() {
        let s = snapshot_part(true, false, &[]);
        assert_eq!(s, r#"{"first":true,"last":false,"workers":[]}"#);
        assert!(!s.contains('\n'));
    }
}
