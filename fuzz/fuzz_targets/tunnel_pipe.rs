//! The tunnel's byte pipe (`tunnel::pipe`): `TunnelChunk` messages from a
//! peer, cut anywhere (empty ones included), read back as exactly the bytes
//! they carry, in order, up to an error item; and writes of any sizes go
//! out as non-empty chunks of at most `MAX_CHUNK` bytes whose bytes are the
//! bytes written. The chunk message itself is decoded from raw bytes too.
#![no_main]

use edgeplane::proto::TunnelChunk;
use edgeplane::tunnel::pipe::{pipe, MAX_CHUNK};
use edgeplane_fuzz::Input;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::OnceLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let _ = TunnelChunk::decode(data);
    let mut input = Input(data);
    let flags = input.byte();
    let ncuts = usize::from(input.byte() % 16);
    // Cut lengths up to ~3 chunks, so that MAX_CHUNK splitting is hit.
    let cuts: Vec<usize> = (0..ncuts)
        .map(|_| {
            let b = usize::from(input.byte());
            if b >= 0xf0 {
                (b - 0xf0) * (MAX_CHUNK / 5) + b
            } else {
                b
            }
        })
        .collect();
    let mut payload = input.rest().to_vec();
    // Long enough, at times, for writes past MAX_CHUNK (the fuzzer's
    // inputs are a few KiB): the payload repeated to up to ~250 KiB.
    if flags & 2 != 0 && !payload.is_empty() {
        let want = usize::from(flags >> 2) * 4096;
        while payload.len() < want {
            payload.extend_from_within(..payload.len().min(want - payload.len()));
        }
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < payload.len() {
        let step = if cuts.is_empty() {
            payload.len()
        } else {
            cuts[k % cuts.len()]
        };
        k += 1;
        let end = (at + step).min(payload.len());
        pieces.push(payload[at..end].to_vec());
        at = end;
        // Bounded, so that one input stays fast: the rest in one piece.
        if pieces.len() >= 64 {
            pieces.push(payload[at..].to_vec());
            break;
        }
    }
    let with_error = flags & 1 != 0;
    runtime().block_on(async {
        // Inbound: what the peer sent, as read from the pipe.
        let mut items: Vec<Result<TunnelChunk, String>> =
            pieces.iter().map(|p| Ok(TunnelChunk { data: p.clone() })).collect();
        if with_error {
            items.push(Err("peer reset".into()));
        }
        let (tx, _rx) = mpsc::channel(1);
        let mut p = pipe(tokio_stream::iter(items), tx);
        let mut got = Vec::new();
        let r = p.read_to_end(&mut got).await;
        assert_eq!(r.is_err(), with_error);
        assert_eq!(got, payload, "bytes lost, reordered or invented");

        // Outbound: each write as chunks.
        let (tx, mut rx) = mpsc::channel(pieces.len() * 4 + 8);
        let (_in_tx, in_rx) = mpsc::channel::<Result<TunnelChunk, String>>(1);
        let mut p = pipe(tokio_stream::wrappers::ReceiverStream::new(in_rx), tx);
        let writer = async {
            for piece in &pieces {
                p.write_all(piece).await.unwrap();
            }
            p.shutdown().await.unwrap();
            drop(p);
        };
        let reader = async {
            let mut out = Vec::new();
            while let Some(c) = rx.recv().await {
                assert!(
                    !c.data.is_empty() && c.data.len() <= MAX_CHUNK,
                    "chunk of {}",
                    c.data.len()
                );
                out.extend_from_slice(&c.data);
            }
            out
        };
        let ((), out) = tokio::join!(writer, reader);
        assert_eq!(out, payload);
    });
});
