//! A worker's fleet record as etcd stores it (`edgeplane.v1.StoredWorker`,
//! protobuf). Times cross as Unix milliseconds: each coordinator's registry
//! counts its own from when it started.

use crate::proto::{ServiceState, StoredService, StoredSession, StoredWorker};
use crate::registry::{FleetRecord, RemoteHold, ServiceEntry, WorkerState};
use crate::routes::Endpoint;
use prost::Message;

/// Bound on one stored record. A record is bounded by what a Hello may
/// declare (`registry::limits`); this is far above that, and below what
/// etcd takes in one request (1.5 MiB by default).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("stored record of {0} bytes, more than {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("stored record does not decode: {0}")]
    Decode(String),
    #[error("stored record: {0}")]
    Invalid(&'static str),
}

/// Registry clock readings and Unix milliseconds, for one registry.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// The Unix time, in ms, of the registry clock's zero.
    pub zero_unix_ms: u64,
}

impl Times {
    fn unix_ms(self, ms: u64) -> u64 {
        self.zero_unix_ms.saturating_add(ms)
    }

    /// Before this registry started reads as its start.
    fn local_ms(self, unix_ms: u64) -> u64 {
        unix_ms.saturating_sub(self.zero_unix_ms)
    }
}

/// `rec` as stored, written by coordinator `written_by`.
pub fn encode(rec: &FleetRecord, times: Times, written_by: &str) -> Vec<u8> {
    StoredWorker {
        worker_id: rec.worker_id.clone(),
        name: rec.name.clone(),
        instance_id: rec.instance_id.clone(),
        capabilities: Some(rec.capabilities.clone()),
        services: rec
            .services
            .iter()
            .map(|(name, s)| StoredService {
                name: name.clone(),
                state: s.state as i32,
                message: s.message.clone(),
                url: s.url.clone(),
                declared: s.declared,
            })
            .collect(),
        advertise_address: rec.advertise_address.clone(),
        version: rec.version.clone(),
        registered_unix_ms: times.unix_ms(rec.registered_ms),
        generation: rec.generation,
        token_digest: rec.token_digest.to_vec(),
        draining: rec.draining,
        sessions: rec.sessions,
        placed: rec.placed.iter().cloned().collect(),
        assignment_version: rec.assignment_version,
        disconnected_unix_ms: rec.disconnected_ms.map(|ms| times.unix_ms(ms)),
        tunnel_wanted: rec.tunnel_wanted,
        written_by: written_by.to_string(),
    }
    .encode_to_vec()
}

/// A stored record, and the coordinator that wrote it.
pub fn decode_with_writer(bytes: &[u8], times: Times) -> Result<(FleetRecord, String), CodecError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let writer = StoredWorker::decode(bytes)
        .map_err(|e| CodecError::Decode(e.to_string()))?
        .written_by;
    Ok((decode(bytes, times)?, writer))
}

/// A session key's value: who holds the worker, and how it is.
pub fn encode_session(coordinator: &str, generation: u64, status: WorkerState) -> Vec<u8> {
    StoredSession {
        coordinator: coordinator.to_string(),
        generation,
        status: status.as_str().to_string(),
    }
    .encode_to_vec()
}

/// A placement key's value.
pub fn encode_placement(placed: &std::collections::BTreeSet<String>, leader: &str) -> Vec<u8> {
    crate::proto::StoredPlacement {
        placed: placed.iter().cloned().collect(),
        leader: leader.to_string(),
    }
    .encode_to_vec()
}

pub fn decode_placement(bytes: &[u8]) -> Result<std::collections::BTreeSet<String>, CodecError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let p = crate::proto::StoredPlacement::decode(bytes).map_err(|e| CodecError::Decode(e.to_string()))?;
    Ok(p.placed.into_iter().collect())
}

/// Bound on a session key's value.
pub const MAX_SESSION_BYTES: usize = 1024;

pub fn decode_session(bytes: &[u8]) -> Result<RemoteHold, CodecError> {
    if bytes.len() > MAX_SESSION_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let s = StoredSession::decode(bytes).map_err(|e| CodecError::Decode(e.to_string()))?;
    if s.coordinator.is_empty() {
        return Err(CodecError::Invalid("no coordinator"));
    }
    let status = WorkerState::parse(&s.status).ok_or(CodecError::Invalid("unknown status"))?;
    Ok(RemoteHold {
        coordinator: s.coordinator,
        generation: s.generation,
        status,
    })
}

pub fn decode(bytes: &[u8], times: Times) -> Result<FleetRecord, CodecError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let s = StoredWorker::decode(bytes).map_err(|e| CodecError::Decode(e.to_string()))?;
    if s.worker_id.is_empty() {
        return Err(CodecError::Invalid("no worker id"));
    }
    let token_digest: [u8; 32] = s
        .token_digest
        .as_slice()
        .try_into()
        .map_err(|_| CodecError::Invalid("a token digest is 32 bytes"))?;
    let services = s
        .services
        .into_iter()
        .map(|svc| {
            let entry = ServiceEntry {
                state: ServiceState::try_from(svc.state).unwrap_or(ServiceState::Unspecified),
                message: svc.message,
                target: Endpoint::parse_url(&svc.url),
                url: svc.url,
                declared: svc.declared,
            };
            (svc.name, entry)
        })
        .collect();
    Ok(FleetRecord {
        worker_id: s.worker_id,
        name: s.name,
        instance_id: s.instance_id,
        capabilities: s.capabilities.unwrap_or_default(),
        services,
        advertise_address: s.advertise_address,
        version: s.version,
        registered_ms: times.local_ms(s.registered_unix_ms),
        generation: s.generation,
        token_digest,
        draining: s.draining,
        sessions: s.sessions,
        placed: s.placed.into_iter().collect(),
        assignment_version: s.assignment_version,
        disconnected_ms: s.disconnected_unix_ms.map(|ms| times.local_ms(ms)),
        tunnel_wanted: s.tunnel_wanted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Hello;

    fn record() -> FleetRecord {
        let hello = Hello {
            name: "gpu-1".into(),
            instance_id: "inst-1".into(),
            services: vec![crate::proto::DeclaredService {
                name: "notes".into(),
                url: "http://10.0.0.5:8100/api".into(),
            }],
            capabilities: Some(crate::proto::Capabilities {
                cpu_cores: 8,
                memory_bytes: 1 << 34,
                ..Default::default()
            }),
            tunnel: true,
            ..Default::default()
        };
        let mut r = FleetRecord::new("w-1".into(), &hello, 7, [9; 32], 1_500);
        r.draining = true;
        r.placed.insert("ocr".into());
        r.services.insert(
            "ocr".into(),
            ServiceEntry::placed("http://10.0.0.5:8200".into(), "placed"),
        );
        r.disconnected_ms = Some(2_500);
        r
    }

    #[test]
    fn a_record_crosses_whole_and_its_times_move_to_the_readers_clock() {
        let rec = record();
        let bytes = encode(
            &rec,
            Times {
                zero_unix_ms: 1_000_000,
            },
            "c-1",
        );
        // Another coordinator started 1,000 ms later reads the same instants.
        let back = decode(
            &bytes,
            Times {
                zero_unix_ms: 1_001_000,
            },
        )
        .unwrap();
        assert_eq!(back.registered_ms, 500);
        assert_eq!(back.disconnected_ms, Some(1_500));
        assert_eq!(back.worker_id, "w-1");
        assert_eq!((back.name.as_str(), back.instance_id.as_str()), ("gpu-1", "inst-1"));
        assert_eq!(back.capabilities.cpu_cores, 8);
        assert_eq!((back.generation, back.token_digest, back.draining), (7, [9; 32], true));
        assert_eq!(back.placed, rec.placed);
        assert!(back.tunnel_wanted);
        let notes = &back.services["notes"];
        assert!(notes.declared);
        assert_eq!(notes.url, "http://10.0.0.5:8100/api");
        assert_eq!(
            notes.target.as_ref().unwrap().1,
            "/api",
            "the URL is parsed again on the way in"
        );
        assert!(!back.services["ocr"].declared);
        let (_, writer) = decode_with_writer(&bytes, Times { zero_unix_ms: 0 }).unwrap();
        assert_eq!(writer, "c-1");
        // Same instants, same clock: the same bytes.
        assert_eq!(
            encode(
                &back,
                Times {
                    zero_unix_ms: 1_001_000
                },
                "c-1"
            ),
            bytes
        );
    }

    #[test]
    fn a_session_key_says_who_holds_the_worker() {
        let v = encode_session("c-2", 9, WorkerState::Degraded);
        let h = decode_session(&v).unwrap();
        assert_eq!(
            (h.coordinator.as_str(), h.generation, h.status),
            ("c-2", 9, WorkerState::Degraded)
        );
        assert!(decode_session(&encode_session("", 1, WorkerState::Healthy)).is_err());
        assert!(decode_session(&[0xff; 4]).is_err());
        assert!(decode_session(&vec![0; MAX_SESSION_BYTES + 1]).is_err());
    }

    #[test]
    fn damaged_records_are_errors_never_panics() {
        let t = Times { zero_unix_ms: 0 };
        assert_eq!(
            decode(&vec![0; MAX_RECORD_BYTES + 1], t).unwrap_err(),
            CodecError::TooLarge(MAX_RECORD_BYTES + 1)
        );
        assert!(matches!(decode(&[0xff, 0xff, 0xff], t), Err(CodecError::Decode(_))));
        assert_eq!(decode(&[], t).unwrap_err(), CodecError::Invalid("no worker id"));
        let mut short = StoredWorker::decode(&encode(&record(), t, "c-1")[..]).unwrap();
        short.token_digest.pop();
        assert!(matches!(decode(&short.encode_to_vec(), t), Err(CodecError::Invalid(_))));
        let good = encode(&record(), t, "c-1");
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x5a;
            let _ = decode(&b, t);
            let _ = decode(&good[..i], t);
        }
    }
}
