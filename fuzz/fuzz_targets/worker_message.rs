//! What a worker sends on its Connect stream: `WorkerMessage` (and a bare
//! `Hello`) decoded from any bytes, then the coordinator's checks of them
//! (`registry::limits::validate_hello`, `clean_status`, the keepalive RTT
//! bound). Never a panic; an accepted Hello is within every bound; a
//! cleaned status keeps a bounded message on a char boundary; decoding
//! what was encoded gives the same message.
#![no_main]

use edgeplane::proto::{worker_message::Msg, Hello, WorkerMessage};
use edgeplane::registry::limits::{self, clean_status, validate_hello};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn check_hello(h: &Hello) {
    if validate_hello(h).is_err() {
        return;
    }
    assert!(limits::check_worker_name(&h.name));
    assert!(h.name.len() <= limits::MAX_NAME_LEN && !h.name.chars().any(char::is_control));
    assert!(h.instance_id.len() <= limits::MAX_ID_LEN);
    assert!(h.resume_token.len() <= limits::MAX_ID_LEN && h.previous_worker_id.len() <= limits::MAX_ID_LEN);
    assert!(h.advertise_address.len() <= limits::MAX_URL_LEN);
    assert!(h.services.len() <= limits::MAX_SERVICES && h.running.len() <= limits::MAX_SERVICES);
    for s in &h.services {
        assert!(limits::check_service_name(&s.name));
        if !s.url.is_empty() {
            assert!(edgeplane::routes::check_service_url(&s.url).is_ok());
        }
    }
    if let Some(c) = &h.capabilities {
        assert!(c.labels.len() <= limits::MAX_LABELS && c.gpus.len() <= limits::MAX_GPUS);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Hello::decode(data) {
        check_hello(&h);
    }
    let Ok(m) = WorkerMessage::decode(data) else { return };
    let again = WorkerMessage::decode(m.encode_to_vec().as_slice()).expect("re-decoding what was encoded");
    assert_eq!(again, m);
    match m.msg {
        Some(Msg::Hello(h)) => check_hello(&h),
        Some(Msg::ServiceStatus(s)) => {
            let before = s.message.clone();
            if let Some(c) = clean_status(s) {
                assert!(limits::check_service_name(&c.service));
                assert!(c.message.len() <= limits::MAX_MESSAGE_LEN);
                assert!(before.starts_with(&c.message));
            }
        }
        Some(Msg::Keepalive(_)) | Some(Msg::RenewCertificate(_)) | None => {}
    }
});
