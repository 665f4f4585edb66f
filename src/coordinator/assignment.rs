//! Building the `Assignment` a worker is sent: how to probe each service it
//! declared (the catalog's readiness check, TCP for a service the catalog
//! does not know), and what to run for each service placed on it.

use crate::catalog::{Catalog, Readiness};
use crate::proto::{readiness::Check, AssignedService, Assignment};
use std::collections::{BTreeMap, BTreeSet};

pub fn readiness(r: &Readiness) -> crate::proto::Readiness {
    let check = match r {
        Readiness::Http(path) => Check::HttpPath(path.clone()),
        Readiness::Grpc(svc) => Check::GrpcService(svc.clone()),
        Readiness::Tcp(_) => Check::Tcp(true),
    };
    crate::proto::Readiness { check: Some(check) }
}

/// The whole assignment: declared services (name, URL) and placed ones.
pub fn build(catalog: &Catalog, version: u64, placed: &BTreeSet<String>, declared: &[(String, String)]) -> Assignment {
    let tcp = crate::proto::Readiness {
        check: Some(Check::Tcp(true)),
    };
    let mut services: Vec<AssignedService> = declared
        .iter()
        .map(|(name, url)| {
            let entry = catalog.resolve(name);
            AssignedService {
                name: name.clone(),
                url: url.clone(),
                readiness: Some(entry.map_or(tcp.clone(), |e| readiness(&e.readiness))),
                declared: true,
                port: entry.map_or(0, |e| e.port as u32),
                ..Default::default()
            }
        })
        .collect();
    for name in placed {
        let Some(e) = catalog.resolve(name) else { continue };
        let port = e.port.to_string();
        services.push(AssignedService {
            name: e.name.clone(),
            // The worker runs it locally and probes it there.
            url: format!("http://127.0.0.1:{}", e.port),
            readiness: Some(readiness(&e.readiness)),
            declared: false,
            port: e.port as u32,
            image: e.image.clone().unwrap_or_default(),
            command: e.command.iter().flatten().map(|a| a.replace("{port}", &port)).collect(),
            env: e.env.clone().into_iter().collect(),
        });
    }
    Assignment { version, services }
}

/// Where the proxy reaches each placed service on a worker: its advertise
/// address with the service's port. Without an advertise address there is
/// no direct path (the tunnel carries such workers' traffic).
pub fn placed_urls(catalog: &Catalog, placed: &BTreeSet<String>, advertise: &str) -> BTreeMap<String, String> {
    let host = advertise_host(advertise);
    placed
        .iter()
        .filter_map(|name| {
            let e = catalog.resolve(name)?;
            let host = host.as_deref()?;
            Some((name.clone(), format!("http://{host}:{}", e.port)))
        })
        .collect()
}

/// The host part of an advertise address (`10.0.0.5`, `box:9000`, `http://box:9000`).
fn advertise_host(advertise: &str) -> Option<String> {
    let a = advertise.trim();
    if a.is_empty() {
        return None;
    }
    let with_scheme = if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    };
    let uri: http::Uri = with_scheme.parse().ok()?;
    let host = uri.host()?;
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_services_get_commands_ports_and_urls() {
        let cat = Catalog::embedded();
        let placed: BTreeSet<String> = ["notes-coa".to_string()].into();
        let a = build(
            &cat,
            3,
            &placed,
            &[("ocr-custom".into(), "http://127.0.0.1:7000".into())],
        );
        assert_eq!(a.version, 3);
        assert_eq!(a.services.len(), 2);
        let custom = &a.services[0];
        assert!(custom.declared);
        assert_eq!(custom.readiness.as_ref().unwrap().check, Some(Check::Tcp(true)));
        let notes = &a.services[1];
        assert_eq!(notes.url, "http://127.0.0.1:8100");
        assert!(notes.command.contains(&"8100".to_string()), "{:?}", notes.command);
        assert_eq!(
            notes.readiness.as_ref().unwrap().check,
            Some(Check::HttpPath("/health".into()))
        );

        let urls = placed_urls(&cat, &placed, "10.1.2.3:9999");
        assert_eq!(urls["notes-coa"], "http://10.1.2.3:8100");
        assert!(placed_urls(&cat, &placed, "").is_empty());
        assert_eq!(
            placed_urls(&cat, &placed, "http://gpu-box")["notes-coa"],
            "http://gpu-box:8100"
        );
    }
}
