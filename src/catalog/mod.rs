//! The service catalog: what the fleet can run, where it may run, and how
//! to tell that it is ready. Embedded by default (`default.toml`, the older
//! fleet's services), replaced whole by `--catalog FILE`.
//!
//! A malformed catalog is refused at start with the file, the line and the
//! reason: a coordinator that silently drops a service is worse than one
//! that does not start.

mod entry;

pub use entry::{CatalogEntry, Readiness, Requirement};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {reason}")]
pub struct CatalogError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    service: Vec<toml::Spanned<entry::RawEntry>>,
}

/// The parsed catalog: entries by name, plus the alias and gRPC-service indexes.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<Arc<CatalogEntry>>,
    by_name: HashMap<String, usize>,
    grpc: HashMap<String, usize>,
}

impl Catalog {
    /// The embedded default catalog.
    pub fn embedded() -> Self {
        Self::parse(DEFAULT, "<embedded catalog>").expect("the embedded catalog is valid")
    }

    /// Reads a catalog file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
            file: file.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses catalog text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, CatalogError> {
        let err = |offset: usize, reason: String| CatalogError {
            file: file.to_string(),
            line: line_of(text, offset),
            reason,
        };
        let parsed: CatalogFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            err(offset, e.message().to_string())
        })?;
        let mut cat = Catalog {
            entries: Vec::new(),
            by_name: HashMap::new(),
            grpc: HashMap::new(),
        };
        for spanned in parsed.service {
            let at = spanned.span().start;
            let entry = spanned
                .into_inner()
                .validate()
                .map_err(|e| err(e.at.unwrap_or(at), e.reason))?;
            let idx = cat.entries.len();
            for key in std::iter::once(&entry.name).chain(&entry.aliases) {
                // `other` may be this entry, not yet in `entries` (an alias
                // equal to the name, or given twice): that indexed past
                // the end and panicked (found by `fuzz/` catalog).
                if let Some(&other) = cat.by_name.get(key) {
                    let other = cat.entries.get(other).map_or(&entry.name, |e| &e.name);
                    return Err(err(at, format!("`{key}` is already the name or an alias of `{other}`")));
                }
                cat.by_name.insert(key.clone(), idx);
            }
            for g in &entry.grpc_services {
                if let Some(&other) = cat.grpc.get(g) {
                    let other = cat.entries.get(other).map_or(&entry.name, |e| &e.name);
                    return Err(err(at, format!("gRPC service `{g}` is already served by `{other}`")));
                }
                cat.grpc.insert(g.clone(), idx);
            }
            cat.entries.push(Arc::new(entry));
        }
        Ok(cat)
    }

    pub fn entries(&self) -> &[Arc<CatalogEntry>] {
        &self.entries
    }

    /// A service by name or alias.
    pub fn resolve(&self, name_or_alias: &str) -> Option<&Arc<CatalogEntry>> {
        self.by_name.get(name_or_alias).map(|&i| &self.entries[i])
    }

    /// The catalog service that serves a fully qualified gRPC service.
    pub fn by_grpc_service(&self, grpc_service: &str) -> Option<&Arc<CatalogEntry>> {
        self.grpc.get(grpc_service).map(|&i| &self.entries[i])
    }

    /// Per-request timeout for a service (the catalog's, else `default`).
    pub fn timeout(&self, name: &str, default: Duration) -> Duration {
        self.resolve(name).and_then(|e| e.timeout).unwrap_or(default)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_has_the_old_fleet() {
        let c = Catalog::embedded();
        assert_eq!(c.entries().len(), 6);
        let notes = c.resolve("notes").unwrap();
        assert_eq!(notes.name, "notes-coa");
        assert_eq!(notes.port, 8100);
        assert_eq!(notes.priority, 3);
        assert_eq!(notes.requires, Requirement::Cpu);
        assert_eq!(c.resolve("llm").unwrap().requires, Requirement::Gpu);
        assert_eq!(c.resolve("llm").unwrap().gpu_memory_bytes, 24 << 30);
        assert_eq!(c.by_grpc_service("notes.v1.Notes").unwrap().name, "notes-coa");
        assert!(c.resolve("nope").is_none());
    }

    #[test]
    fn errors_name_the_file_line_and_reason() {
        let text =
            "[[service]]\nname = \"a\"\nport = 1\nrequires = \"gpu\"\n\n[[service]]\nname = \"b\"\nport = \"x\"\n";
        let e = Catalog::parse(text, "cat.toml").unwrap_err();
        assert_eq!(e.file, "cat.toml");
        assert_eq!(e.line, 8, "{e}");

        let text = "[[service]]\nname = \"a\"\nport = 1\nrequires = \"tpu\"\n";
        let e = Catalog::parse(text, "cat.toml").unwrap_err();
        assert!(e.reason.contains("tpu") || e.reason.contains("variant"), "{e}");

        let text = "[[service]]\nname = \"a\"\nport = 1\n\n[[service]]\nname = \"b\"\naliases = [\"a\"]\nport = 2\n";
        let e = Catalog::parse(text, "cat.toml").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("already"), "{e}");

        let text = "[[service]]\nname = \"a\"\nport = 1\nmin_replicas = 3\nmax_replicas = 2\n";
        assert!(Catalog::parse(text, "c").unwrap_err().reason.contains("replicas"));
        let text = "[[service]]\nname = \"a\"\nport = 1\ncolour = \"red\"\n";
        assert!(Catalog::parse(text, "c").unwrap_err().reason.contains("colour"));

        // A bad readiness value is reported at its own line.
        let text = "[[service]]\nname = \"a\"\nport = 1\n\nreadiness = { http = \"health\" }\n";
        let e = Catalog::parse(text, "c").unwrap_err();
        assert_eq!(e.line, 5, "{e}");
        assert!(e.reason.contains("must start with /"), "{e}");
    }

    /// A name repeated within one entry (an alias equal to the name, an
    /// alias or a gRPC service listed twice) panicked with an index out of
    /// bounds instead of being refused.
    #[test]
    fn a_name_repeated_within_an_entry_is_refused() {
        for (text, what) in [
            ("[[service]]\nname = \"a\"\n\naliases = [\"a\"]\nport = 1\n", "`a`"),
            ("[[service]]\nname = \"a\"\naliases = [\"b\", \"b\"]\nport = 1\n", "`b`"),
            (
                "[[service]]\nname = \"a\"\nport = 1\ngrpc_services = [\"x.v1.X\", \"x.v1.X\"]\n",
                "`x.v1.X`",
            ),
        ] {
            let e = Catalog::parse(text, "cat.toml").unwrap_err();
            assert_eq!(e.line, 1, "{e}");
            assert!(e.reason.contains(what) && e.reason.contains("already"), "{e}");
        }
    }

    #[test]
    fn a_tcp_check_turned_off_is_refused_with_its_line() {
        let text = "[[service]]\nname = \"ok\"\nport = 1\nreadiness = { tcp = true }\n\n[[service]]\nname = \"quiet\"\nport = 2\nreadiness = { tcp = false }\n";
        let e = Catalog::parse(text, "cat.toml").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("cat.toml", 9), "{e}");
        assert!(e.reason.contains("`quiet`") && e.reason.contains("tcp = false"), "{e}");
        assert!(e.to_string().starts_with("cat.toml:9: "), "{e}");
        // `tcp = true` and no readiness at all both mean a TCP check.
        let text = "[[service]]\nname = \"ok\"\nport = 1\nreadiness = { tcp = true }\n\n[[service]]\nname = \"plain\"\nport = 2\n";
        let c = Catalog::parse(text, "cat.toml").unwrap();
        assert_eq!(c.resolve("ok").unwrap().readiness, Readiness::Tcp(true));
        assert_eq!(c.resolve("plain").unwrap().readiness, Readiness::Tcp(true));
    }
}
