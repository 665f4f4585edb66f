//! `edgeplane workers --watch`: the fleet table kept current from the
//! `WatchWorkers` stream and drawn again on each change.
//!
//! On a terminal each frame replaces the last (ANSI clear) and the clocks
//! tick once a second. Into a pipe or a file, a frame is written only when
//! the fleet changes, each followed by a blank line, so that a script (or
//! a test) can read it frame by frame. `--json` writes the fleet as one
//! JSON line per change instead, never clearing anything.

use crate::admin_cli::{client, render_table, status_arg, with_auth, CliError, WorkersArgs};
use crate::json::{status_str, JsonWorker};
use crate::proto::{EventKind, WatchWorkersRequest, Worker, WorkerEvent, WorkerStatus};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Least time between two frames: a fleet reconnecting at once sends
/// thousands of events, and a frame for each would be unreadable flicker.
const MIN_FRAME_GAP: Duration = Duration::from_millis(100);
/// How often a terminal's frame is drawn again with nothing changed, so
/// that ages and silences keep counting.
const REFRESH: Duration = Duration::from_secs(1);
/// Cursor home, then erase the screen.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// The fleet as the watch has seen it.
#[derive(Debug, Default)]
pub struct Fleet {
    workers: BTreeMap<String, Seen>,
    synced: bool,
    last_change: Option<String>,
}

#[derive(Debug)]
struct Seen {
    worker: Worker,
    at: Instant,
}

impl Fleet {
    /// Applies one event seen at `now`; true when the frame should be drawn again.
    pub fn apply(&mut self, e: WorkerEvent, now: Instant) -> bool {
        let kind = EventKind::try_from(e.kind).unwrap_or(EventKind::Unspecified);
        match (kind, e.worker) {
            (EventKind::Existing, Some(w)) => {
                // EXISTING after SYNCED starts a fresh snapshot (the server's
                // watch fell behind): what it does not list again is gone.
                if self.synced {
                    self.workers.clear();
                    self.synced = false;
                }
                self.workers.insert(w.worker_id.clone(), Seen { worker: w, at: now });
                false
            }
            (EventKind::Synced, _) => {
                self.synced = true;
                true
            }
            (EventKind::Added | EventKind::Updated | EventKind::Removed, Some(w)) => {
                let what = match kind {
                    EventKind::Added => "joined".to_string(),
                    EventKind::Removed => "removed".to_string(),
                    _ => status_str(w.status).to_string(),
                };
                let mut change = format!("{} {what}", w.name);
                if !e.reason.is_empty() {
                    change = format!("{change}: {}", e.reason);
                }
                self.last_change = Some(change);
                if kind == EventKind::Removed {
                    self.workers.remove(&w.worker_id);
                } else {
                    self.workers.insert(w.worker_id.clone(), Seen { worker: w, at: now });
                }
                self.synced
            }
            _ => false,
        }
    }

    /// The whole snapshot has arrived: there is a fleet to show.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The workers to show (those in `status`, unless 0), by name then id,
    /// their clocks moved on to `now`. Keepalives are not events, so a
    /// healthy or draining worker's silence stays as its last event had
    /// it (under the heartbeat timeout, or it would have changed); a
    /// degraded or disconnected one is silent still, so its silence grows.
    pub fn workers(&self, status: i32, now: Instant) -> Vec<Worker> {
        let mut out: Vec<Worker> = self
            .workers
            .values()
            .filter(|s| status == 0 || s.worker.status == status)
            .map(|s| {
                let mut w = s.worker.clone();
                let since = now.saturating_duration_since(s.at).as_secs_f64();
                w.age_seconds += since;
                let silent = [WorkerStatus::Degraded as i32, WorkerStatus::Disconnected as i32];
                if silent.contains(&w.status) {
                    w.silent_seconds += since;
                }
                w
            })
            .collect();
        out.sort_by(|a, b| (&a.name, &a.worker_id).cmp(&(&b.name, &b.worker_id)));
        out
    }

    /// A line that sums the fleet up (`3 workers: 2 healthy, 1
    /// disconnected`), the last change and the time, then the table.
    pub fn frame(&self, status: i32, now: Instant, wall: SystemTime) -> String {
        let workers = self.workers(status, now);
        let counts: Vec<String> = ["healthy", "degraded", "disconnected", "draining"]
            .into_iter()
            .filter_map(|st| {
                let n = workers.iter().filter(|w| status_str(w.status) == st).count();
                (n > 0).then(|| format!("{n} {st}"))
            })
            .collect();
        let noun = if workers.len() == 1 { "worker" } else { "workers" };
        let mut head = format!("{} {noun}", workers.len());
        if !counts.is_empty() {
            head = format!("{head}: {}", counts.join(", "));
        }
        if let Some(c) = &self.last_change {
            head = format!("{head} · last change: {c}");
        }
        let at = humantime::format_rfc3339_seconds(wall);
        format!("{head} · {at}\n{}", render_table(&workers))
    }

    /// The shown workers as one line of JSON (the shape of `workers --json`).
    pub fn json_line(&self, status: i32, now: Instant) -> Result<String, serde_json::Error> {
        let v: Vec<JsonWorker> = self.workers(status, now).iter().map(JsonWorker::from).collect();
        Ok(serde_json::to_string(&v)? + "\n")
    }
}

/// Where frames go, and how one follows another.
pub struct Screen<W> {
    out: W,
    /// Clear before each frame (a terminal, and not JSON).
    clear: bool,
    /// Follow each frame with a blank line (a table into a pipe or file).
    separate: bool,
}

impl<W: Write> Screen<W> {
    pub fn new(out: W, terminal: bool, json: bool) -> Self {
        Screen {
            out,
            clear: terminal && !json,
            separate: !terminal && !json,
        }
    }

    /// Writes one frame, whole, and flushes it.
    pub fn show(&mut self, frame: &str) -> std::io::Result<()> {
        let mut buf = String::with_capacity(frame.len() + CLEAR.len() + 1);
        if self.clear {
            buf.push_str(CLEAR);
        }
        buf.push_str(frame);
        if self.separate {
            buf.push('\n');
        }
        self.out.write_all(buf.as_bytes())?;
        self.out.flush()
    }

    /// Frames are drawn again with nothing changed, for the clocks.
    fn ticks(&self) -> bool {
        self.clear
    }
}

/// Runs `edgeplane workers --watch` into `out` until `stop` (Ctrl-C) or
/// the end of the stream; both are a clean end. A reader that closed the
/// pipe (`| head`) ends it cleanly too.
pub async fn run<W: Write + IsTerminal>(args: &WorkersArgs, out: W, stop: CancellationToken) -> Result<(), CliError> {
    let status = status_arg(args.status.as_deref())?;
    let terminal = out.is_terminal();
    let mut screen = Screen::new(out, terminal, args.json);
    let (mut c, auth) = client(&args.target).await?;
    let mut stream = c
        .watch_workers(with_auth(WatchWorkersRequest {}, &auth))
        .await?
        .into_inner();
    let draw = |fleet: &Fleet, screen: &mut Screen<W>| -> Result<bool, CliError> {
        let now = Instant::now();
        let frame = if args.json {
            fleet.json_line(status, now)?
        } else {
            fleet.frame(status, now, SystemTime::now())
        };
        match screen.show(&frame) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(CliError::Output(e)),
        }
    };
    let mut fleet = Fleet::default();
    let mut dirty = false;
    let mut last_frame: Option<Instant> = None;
    loop {
        // When the next frame is due: a change, at least MIN_FRAME_GAP
        // after the last frame; on a terminal, every REFRESH regardless.
        let due = match last_frame {
            _ if !fleet.synced() => None,
            None => dirty.then(Instant::now),
            Some(t) if dirty => Some(t + MIN_FRAME_GAP),
            Some(t) if screen.ticks() => Some(t + REFRESH),
            Some(_) => None,
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            _ = sleep_until(due) => {
                if !draw(&fleet, &mut screen)? {
                    return Ok(());
                }
                last_frame = Some(Instant::now());
                dirty = false;
            }
            m = stream.message() => match m {
                Ok(Some(e)) => dirty |= fleet.apply(e, Instant::now()),
                Ok(None) => {
                    if dirty {
                        draw(&fleet, &mut screen)?;
                    }
                    tracing::warn!("the coordinator ended the watch");
                    return Ok(());
                }
                Err(s) => return Err(s.into()),
            },
        }
    }
}

/// Sleeps until `due`; never wakes without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, name: &str, status: WorkerStatus) -> Worker {
        Worker {
            worker_id: id.into(),
            name: name.into(),
            status: status as i32,
            age_seconds: 10.0,
            silent_seconds: 1.0,
            ..Default::default()
        }
    }

    fn event(kind: EventKind, w: Option<Worker>, reason: &str) -> WorkerEvent {
        WorkerEvent {
            kind: kind as i32,
            worker: w,
            reason: reason.into(),
        }
    }

    fn names(f: &Fleet, now: Instant) -> Vec<String> {
        f.workers(0, now).into_iter().map(|w| w.name).collect()
    }

    #[test]
    fn draws_once_synced_and_follows_changes() {
        let t = Instant::now();
        let mut f = Fleet::default();
        assert!(!f.apply(
            event(EventKind::Existing, Some(worker("2", "b", WorkerStatus::Healthy)), ""),
            t
        ));
        assert!(!f.apply(
            event(EventKind::Existing, Some(worker("1", "a", WorkerStatus::Healthy)), ""),
            t
        ));
        assert!(!f.synced());
        assert!(f.apply(event(EventKind::Synced, None, ""), t));
        assert_eq!(names(&f, t), ["a", "b"], "sorted by name");

        let gone = worker("2", "b", WorkerStatus::Disconnected);
        assert!(f.apply(event(EventKind::Updated, Some(gone.clone()), "stream closed"), t));
        let frame = f.frame(0, t, SystemTime::UNIX_EPOCH);
        let head = frame.lines().next().unwrap();
        assert_eq!(
            head,
            "2 workers: 1 healthy, 1 disconnected · last change: b disconnected: stream closed · 1970-01-01T00:00:00Z"
        );
        assert!(frame.lines().nth(1).unwrap().starts_with("NAME"), "{frame}");
        assert_eq!(f.workers(WorkerStatus::Healthy as i32, t).len(), 1, "--status filters");

        assert!(f.apply(event(EventKind::Removed, Some(gone), "silent for 1s"), t));
        assert_eq!(names(&f, t), ["a"]);
        assert!(f.apply(
            event(EventKind::Added, Some(worker("3", "c", WorkerStatus::Healthy)), ""),
            t
        ));
        assert!(f
            .frame(0, t, SystemTime::UNIX_EPOCH)
            .contains("last change: c joined ·"));
    }

    #[test]
    fn a_fresh_snapshot_replaces_the_fleet() {
        let t = Instant::now();
        let mut f = Fleet::default();
        f.apply(
            event(EventKind::Existing, Some(worker("1", "a", WorkerStatus::Healthy)), ""),
            t,
        );
        f.apply(event(EventKind::Synced, None, ""), t);
        // The server fell behind and starts over: `a` is not in it any more.
        assert!(!f.apply(
            event(EventKind::Existing, Some(worker("2", "b", WorkerStatus::Healthy)), ""),
            t
        ));
        assert!(!f.synced(), "nothing is drawn from half a snapshot");
        assert!(f.apply(event(EventKind::Synced, None, ""), t));
        assert_eq!(names(&f, t), ["b"]);
    }

    #[test]
    fn clocks_move_on_and_only_the_silent_grow_silent() {
        let t = Instant::now();
        let mut f = Fleet::default();
        f.apply(
            event(EventKind::Existing, Some(worker("1", "up", WorkerStatus::Healthy)), ""),
            t,
        );
        f.apply(
            event(
                EventKind::Existing,
                Some(worker("2", "down", WorkerStatus::Disconnected)),
                "",
            ),
            t,
        );
        f.apply(event(EventKind::Synced, None, ""), t);
        let later = f.workers(0, t + Duration::from_secs(5));
        let (down, up) = (&later[0], &later[1]);
        assert_eq!((up.age_seconds, up.silent_seconds), (15.0, 1.0));
        assert_eq!((down.age_seconds, down.silent_seconds), (15.0, 6.0));
        let line = f.json_line(0, t).unwrap();
        assert!(
            line.ends_with('\n') && !line.trim_end().contains('\n'),
            "one line: {line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v[1]["status"], "healthy");
    }

    #[test]
    fn frames_are_cleared_on_a_terminal_and_separated_in_a_pipe() {
        let mut tty = Screen::new(Vec::new(), true, false);
        tty.show("A\n").unwrap();
        tty.show("B\n").unwrap();
        assert_eq!(String::from_utf8(tty.out).unwrap(), format!("{CLEAR}A\n{CLEAR}B\n"));
        let mut pipe = Screen::new(Vec::new(), false, false);
        pipe.show("A\n").unwrap();
        pipe.show("B\n").unwrap();
        assert!(!pipe.ticks());
        assert_eq!(String::from_utf8(pipe.out).unwrap(), "A\n\nB\n\n");
        let mut json = Screen::new(Vec::new(), true, true);
        json.show("[]\n").unwrap();
        assert!(!json.ticks());
        assert_eq!(String::from_utf8(json.out).unwrap(), "[]\n");
    }
}
