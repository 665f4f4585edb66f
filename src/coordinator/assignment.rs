//! Building the `Assignment` a worker is sent: for now, how to probe the
//! services it declared (the catalog's readiness check for each, TCP for a
//! service the catalog does not know).

use crate::catalog::{Catalog, Readiness};
use crate::proto::{readiness::Check, AssignedService, Assignment, Hello};

pub fn readiness(r: &Readiness) -> crate::proto::Readiness {
    let check = match r {
        Readiness::Http(path) => Check::HttpPath(path.clone()),
        Readiness::Grpc(svc) => Check::GrpcService(svc.clone()),
        Readiness::Tcp(_) => Check::Tcp(true),
    };
    crate::proto::Readiness { check: Some(check) }
}

/// The assignment for a worker's declared services.
pub fn declared(catalog: &Catalog, hello: &Hello) -> Assignment {
    let services = hello
        .services
        .iter()
        .map(|d| {
            let entry = catalog.resolve(&d.name);
            AssignedService {
                name: d.name.clone(),
                url: d.url.clone(),
                readiness: Some(entry.map_or(
                    crate::proto::Readiness {
                        check: Some(Check::Tcp(true)),
                    },
                    |e| readiness(&e.readiness),
                )),
                declared: true,
                port: entry.map_or(0, |e| e.port as u32),
                ..Default::default()
            }
        })
        .collect();
    Assignment { version: 1, services }
}
