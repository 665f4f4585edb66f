//! The catalog TOML loader (`Catalog::parse`): never a panic, an error
//! names a line inside the text, and a loaded catalog is consistent: every
//! name and alias resolves to its entry, every gRPC service to its server,
//! replicas are ordered, sizes and timeouts came through their parsers.
#![no_main]

use edgeplane::catalog::Catalog;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cat = match Catalog::parse(text, "fuzz.toml") {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.file, "fuzz.toml");
            assert!(
                e.line >= 1 && e.line <= text.lines().count() + 1,
                "line {} of {}",
                e.line,
                text.lines().count()
            );
            return;
        }
    };
    for e in cat.entries() {
        assert!(std::sync::Arc::ptr_eq(cat.resolve(&e.name).unwrap(), e));
        for a in &e.aliases {
            assert!(std::sync::Arc::ptr_eq(cat.resolve(a).unwrap(), e));
        }
        for g in &e.grpc_services {
            assert!(std::sync::Arc::ptr_eq(cat.by_grpc_service(g).unwrap(), e));
        }
        assert!(e.port != 0 && e.min_replicas <= e.max_replicas);
        assert!(e.cpu.is_finite() && e.cpu >= 0.0);
        let _ = cat.timeout(&e.name, Duration::from_secs(1));
    }
});
