//! Bounds on everything a worker tells us about itself. The gRPC message
//! size limit caps the bytes; these cap the counts and lengths, so that one
//! peer cannot make the registry (or every admin view) arbitrarily large.

use crate::proto::{Hello, ServiceStatus};

pub const MAX_NAME_LEN: usize = 253;
pub const MAX_ID_LEN: usize = 128;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_LEN: usize = 256;
pub const MAX_GPUS: usize = 64;
pub const MAX_SERVICES: usize = 64;
pub const MAX_URL_LEN: usize = 1024;
pub const MAX_MESSAGE_LEN: usize = 1024;

/// Why a Hello or status was refused; shown to the worker as INVALID_ARGUMENT.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidHello {
    #[error("name must be 1..={MAX_NAME_LEN} printable characters")]
    Name,
    #[error("instance_id must be at most {MAX_ID_LEN} characters")]
    InstanceId,
    #[error("resume_token and previous_worker_id must be at most {MAX_ID_LEN} characters")]
    ResumeToken,
    #[error("at most {MAX_LABELS} labels of at most {MAX_LABEL_LEN} characters each")]
    Labels,
    #[error("at most {MAX_GPUS} GPUs")]
    Gpus,
    #[error("at most {MAX_SERVICES} services, each with a name of 1..={MAX_NAME_LEN} characters and a URL of at most {MAX_URL_LEN}")]
    Services,
    /// A declared service's URL is one nothing here can dial (not
    /// `http://` or `https://`).
    #[error("service `{name}`: {reason}")]
    ServiceUrl {
        name: String,
        reason: crate::routes::ServiceUrlError,
    },
    #[error("advertise_address must be at most {MAX_URL_LEN} characters")]
    Advertise,
    #[error("version must be at most {MAX_ID_LEN} characters")]
    Version,
}

fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

/// A worker name as Hello and Join take it: printable, bounded.
pub fn check_worker_name(name: &str) -> bool {
    printable(name, MAX_NAME_LEN)
}

pub fn check_service_name(name: &str) -> bool {
    printable(name, MAX_NAME_LEN)
}

pub fn validate_hello(h: &Hello) -> Result<(), InvalidHello> {
    if !check_worker_name(&h.name) {
        return Err(InvalidHello::Name);
    }
    if h.instance_id.len() > MAX_ID_LEN || h.instance_id.chars().any(char::is_control) {
        return Err(InvalidHello::InstanceId);
    }
    if h.resume_token.len() > MAX_ID_LEN || h.previous_worker_id.len() > MAX_ID_LEN {
        return Err(InvalidHello::ResumeToken);
    }
    if h.version.len() > MAX_ID_LEN {
        return Err(InvalidHello::Version);
    }
    if h.advertise_address.len() > MAX_URL_LEN {
        return Err(InvalidHello::Advertise);
    }
    if let Some(c) = &h.capabilities {
        if c.labels.len() > MAX_LABELS
            || c.labels
                .iter()
                .any(|(k, v)| k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
        {
            return Err(InvalidHello::Labels);
        }
        if c.gpus.len() > MAX_GPUS || c.gpus.iter().any(|g| g.model.len() > MAX_LABEL_LEN) {
            return Err(InvalidHello::Gpus);
        }
    }
    if h.running.len() > MAX_SERVICES || h.running.iter().any(|s| !check_service_name(s)) {
        return Err(InvalidHello::Services);
    }
    if h.services.len() > MAX_SERVICES
        || h.services
            .iter()
            .any(|s| !check_service_name(&s.name) || s.url.len() > MAX_URL_LEN)
    {
        return Err(InvalidHello::Services);
    }
    // An empty URL declares a service without an address of its own.
    for s in h.services.iter().filter(|s| !s.url.is_empty()) {
        if let Err(reason) = crate::routes::check_service_url(&s.url) {
            return Err(InvalidHello::ServiceUrl {
                name: s.name.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Checks a status report; the message is truncated rather than refused.
pub fn clean_status(mut s: ServiceStatus) -> Option<ServiceStatus> {
    if !check_service_name(&s.service) {
        return None;
    }
    if s.message.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !s.message.is_char_boundary(cut) {
            cut -= 1;
        }
        s.message.truncate(cut);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Capabilities, DeclaredService};

    fn hello() -> Hello {
        Hello {
            name: "gpu-1".into(),
            instance_id: "abc".into(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_plain_hello() {
        assert_eq!(validate_hello(&hello()), Ok(()));
    }

    #[test]
    fn refuses_what_a_peer_could_inflate() {
        let mut h = hello();
        h.name = String::new();
        assert_eq!(validate_hello(&h), Err(InvalidHello::Name));
        let mut h = hello();
        h.name = "a\nb".into();
        assert_eq!(validate_hello(&h), Err(InvalidHello::Name));
        let mut h = hello();
        let mut caps = Capabilities::default();
        for i in 0..=MAX_LABELS {
            caps.labels.insert(i.to_string(), "x".into());
        }
        h.capabilities = Some(caps);
        assert_eq!(validate_hello(&h), Err(InvalidHello::Labels));
        let mut h = hello();
        h.services = (0..=MAX_SERVICES)
            .map(|i| DeclaredService {
                name: format!("s{i}"),
                url: String::new(),
            })
            .collect();
        assert_eq!(validate_hello(&h), Err(InvalidHello::Services));
    }

    #[test]
    fn services_must_have_http_or_https_urls() {
        let with = |url: &str| {
            let mut h = hello();
            h.services = vec![DeclaredService {
                name: "notes".into(),
                url: url.into(),
            }];
            validate_hello(&h)
        };
        assert_eq!(with("http://10.0.0.5:8100"), Ok(()));
        assert_eq!(with(""), Ok(()));
        assert_eq!(with("https://10.0.0.5:8443"), Ok(()));
        let ftp = with("ftp://h:21").unwrap_err();
        assert_eq!(
            ftp,
            InvalidHello::ServiceUrl {
                name: "notes".into(),
                reason: crate::routes::ServiceUrlError::Scheme("ftp".into())
            }
        );
        assert!(matches!(with("ftp://h:21"), Err(InvalidHello::ServiceUrl { .. })));
    }

    #[test]
    fn long_status_messages_are_cut_on_a_char_boundary() {
        let s = ServiceStatus {
            service: "x".into(),
            state: 1,
            message: "é".repeat(MAX_MESSAGE_LEN),
        };
        let c = clean_status(s).unwrap();
        assert!(c.message.len() <= MAX_MESSAGE_LEN);
        assert!(clean_status(ServiceStatus::default()).is_none());
    }
}
