//! `GET /api/admin/events`: the fleet as server-sent events, for the
//! dashboard and for `curl -N`. The current fleet first (a `snapshot`),
//! then every change (`change`), each with an `id:`; a client that
//! reconnects with `Last-Event-ID` resumes if the coordinator still holds
//! what it missed, and gets a fresh snapshot otherwise. The wire shapes are
//! in [`super::event_frames`], the numbering in [`super::events`].
//!
//! Everything a client controls is bounded: streams open at once
//! ([`MAX_STREAMS`]), one per connection, frames buffered per stream
//! ([`super::events::SUBSCRIBER_BUFFER`], then a resync), and a comment
//! every [`KEEP_ALIVE`] so that proxies keep the connection and a vanished
//! client is noticed.

use super::event_frames::{self, SNAPSHOT_PART};
use super::events::{Change, EventHub, Frame};
use crate::tls::PeerInfo;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// Event streams open at once on one coordinator: dashboards are few, and
/// each open stream holds a task and a buffer.
pub const MAX_STREAMS: usize = 128;

/// How often an idle stream sends a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Events queued between a stream's task and its connection; the task
/// waits beyond it (and the hub's buffer takes over).
const STREAM_QUEUE: usize = 16;

#[derive(Clone)]
pub struct EventStreams {
    hub: EventHub,
    closing: CancellationToken,
    slots: Arc<Semaphore>,
    /// Connections with a stream open (by peer address, which is one
    /// connection's): HTTP/2 could otherwise multiplex many on one.
    open: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl EventStreams {
    pub fn new(hub: EventHub, closing: CancellationToken) -> Self {
        EventStreams {
            hub,
            closing,
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
            open: Arc::default(),
        }
    }
}

/// Why a stream was not opened.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{MAX_STREAMS} event streams are open on this coordinator; close one or retry later")]
    TooMany,
    #[error("this connection already has an event stream open; open it on another connection")]
    OnePerConnection,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Refusal::TooMany => (StatusCode::SERVICE_UNAVAILABLE, "too_many_event_streams"),
            Refusal::OnePerConnection => (StatusCode::CONFLICT, "event_stream_open"),
        };
        crate::errors::response(status, code, self)
    }
}

/// Holds a stream's place: its slot and its connection's mark, given
/// back when the stream ends.
struct Place {
    _slot: OwnedSemaphorePermit,
    open: Arc<Mutex<HashSet<SocketAddr>>>,
    addr: Option<SocketAddr>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(a) = self.addr {
            self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&a);
        }
    }
}

impl EventStreams {
    fn place(&self, addr: Option<SocketAddr>) -> Result<Place, Refusal> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| Refusal::TooMany)?;
        if let Some(a) = addr {
            if !self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(a) {
                return Err(Refusal::OnePerConnection);
            }
        }
        Ok(Place {
            _slot: slot,
            open: self.open.clone(),
            addr,
        })
    }
}

pub async fn events(State(streams): State<EventStreams>, req: axum::extract::Request) -> Response {
    let addr = PeerInfo::of(req.extensions()).and_then(|p| p.addr);
    let place = match streams.place(addr) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let last = last_event_id(req.headers());
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(async move {
        let _place = place;
        let out = Out {
            tx,
            closing: streams.closing.clone(),
        };
        // Ends when the client goes, the coordinator closes, or the hub stops.
        let _ = follow(&streams.hub, last.as_deref(), &out).await;
    });
    let body = ReceiverStream::new(rx).map(Ok::<Event, Infallible>);
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The stream has ended (client gone, or the coordinator closing).
struct Ended;

/// Where a stream's events go.
struct Out {
    tx: mpsc::Sender<Event>,
    closing: CancellationToken,
}

impl Out {
    async fn send(&self, ev: Event) -> Result<(), Ended> {
        tokio::select! {
            r = self.tx.send(ev) => r.map_err(|_| Ended),
            () = self.closing.cancelled() => Err(Ended),
        }
    }

    async fn change(&self, hub: &EventHub, c: &Change) -> Result<(), Ended> {
        self.send(Event::default().id(hub.event_id(c.seq)).event("change").data(c.data()))
            .await
    }

    /// The fleet now, in parts; returns the receiver that follows it.
    async fn snapshot(&self, hub: &EventHub) -> Result<broadcast::Receiver<Frame>, Ended> {
        let (snap, rx) = hub.snapshot();
        let parts: Vec<_> = snap.workers.chunks(SNAPSHOT_PART).collect();
        let n = parts.len().max(1);
        for i in 0..n {
            let workers = parts.get(i).copied().unwrap_or_default();
            let (first, last) = (i == 0, i + 1 == n);
            let mut ev = Event::default().event("snapshot");
            if last {
                ev = ev.id(hub.event_id(snap.seq));
            }
            self.send(ev.data(event_frames::snapshot_part(first, last, workers)))
                .await?;
        }
        Ok(rx)
    }
}

async fn follow(hub: &EventHub, last: Option<&str>, out: &Out) -> Result<(), Ended> {
    let mut rx = match hub.resume(last) {
        Some((missed, rx)) => {
            for c in &missed {
                out.change(hub, c).await?;
            }
            rx
        }
        None => out.snapshot(hub).await?,
    };
    loop {
        let frame = tokio::select! {
            f = rx.recv() => f,
            () = out.tx.closed() => return Err(Ended),
            () = out.closing.cancelled() => return Err(Ended),
        };
        match frame {
            Ok(Frame::Change(c)) => out.change(hub, &c).await?,
            // Behind, or the hub lost changes: a fresh picture, rather
            // than a silently wrong one.
            Ok(Frame::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => rx = out.snapshot(hub).await?,
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}
