//! Label sets, and the bound on service names in them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Distinct service names that get series of their own; the rest are
/// counted under [`OTHER`]. Workers declare service names, so without a
/// bound a peer could grow the exposition without end.
pub const MAX_SERVICES: usize = 512;

/// The service label of requests for services past [`MAX_SERVICES`].
pub const OTHER: &str = "_other";

/// The service label of requests that named no known service: a client's
/// path must never become a label value.
pub const UNKNOWN: &str = "_unknown";

/// The service names seen so far, up to [`MAX_SERVICES`].
#[derive(Debug, Default)]
pub struct Services {
    seen: RwLock<HashSet<Arc<str>>>,
}

impl Services {
    /// The label value for `service`: itself while there is room.
    pub fn label(&self, service: &str) -> Name {
        Name(self.name(service))
    }

    fn name(&self, service: &str) -> Arc<str> {
        if let Some(s) = self.seen.read().unwrap_or_else(|e| e.into_inner()).get(service) {
            return s.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get(service) {
            return s.clone();
        }
        if seen.len() >= MAX_SERVICES {
            return Arc::from(OTHER);
        }
        let s: Arc<str> = Arc::from(service);
        seen.insert(s.clone());
        s
    }
}

/// A service name as a label value, shared rather than copied per request.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Service {
    pub service: Name,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceVia {
    pub service: Name,
    pub via: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    pub service: Name,
    pub via: &'static str,
    pub code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceKind {
    pub service: Name,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Transition {
    pub from: &'static str,
    pub to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cause {
    pub cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_labels_are_bounded() {
        let s = Services::default();
        for i in 0..MAX_SERVICES {
            assert_eq!(&*s.label(&format!("svc-{i}")).0, format!("svc-{i}"));
        }
        assert_eq!(&*s.label("one-too-many").0, OTHER);
        assert_eq!(&*s.label("svc-7").0, "svc-7", "a known one keeps its own");
    }
}
