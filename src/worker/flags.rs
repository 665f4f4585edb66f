//! The worker's repeatable `KEY=VALUE` flags (`--service`, `--label`,
//! `--gpu`), parsed as clap reads them, so a bad one is refused before the
//! agent starts.

use crate::parse::{normalize_url, parse_bytes};

fn split_pair(s: &str, what: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected {what}, got `{s}`")),
    }
}

pub fn parse_service(s: &str) -> Result<(String, String), String> {
    let (name, url) = split_pair(s, "NAME=URL")?;
    if url.is_empty() {
        return Err(format!("service `{name}` needs a URL (NAME=URL)"));
    }
    let url = normalize_url(&url);
    crate::routes::check_service_url(&url).map_err(|e| format!("service `{name}`: {e}"))?;
    Ok((name, url))
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    split_pair(s, "KEY=VALUE")
}

pub fn parse_gpu(s: &str) -> Result<(String, u64), String> {
    let (model, mem) = split_pair(s, "MODEL=MEMORY (e.g. A100=80GiB)")?;
    Ok((model, parse_bytes(&mem)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_labels_gpus() {
        assert_eq!(
            parse_service("notes-coa=127.0.0.1:8100").unwrap(),
            ("notes-coa".into(), "http://127.0.0.1:8100".into())
        );
        assert!(parse_service("notes-coa").is_err());
        assert!(parse_service("=http://x").is_err());
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert_eq!(parse_gpu("A100=80GiB").unwrap().1, 80 * 1024 * 1024 * 1024);
        assert_eq!(parse_gpu("T4=16GB").unwrap().1, 16_000_000_000);
        assert!(parse_gpu("T4=lots").is_err());
    }
}
