//! The coordinators a worker may dial, and the order it tries them in.
//!
//! `--coordinator` takes several URLs, comma-separated; a name that
//! resolves to several addresses counts as several coordinators. On losing
//! its coordinator, the worker tries the next one (with the usual jittered
//! backoff between attempts), so that a cluster's surviving coordinators
//! take over the workers of one that died.

use crate::parse::normalize_url;

/// One coordinator to dial: the URL as configured (kept as the request's
/// authority, so a name stays a name) and where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    /// `http://ADDRESS:PORT` for one address of `url`'s host; `url` itself
    /// when it names an address, or its name did not resolve.
    pub dial: String,
}

/// The configured URLs, each with a scheme; empty entries are dropped.
pub fn urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(normalize_url)
        .collect()
}

/// Every target, in the configured order, each name expanded to its
/// addresses.
pub async fn resolve(urls: &[String]) -> Vec<Target> {
    let mut out = Vec::new();
    for url in urls {
        let addrs = match host_port(url) {
            Some((host, port)) if host.parse::<std::net::IpAddr>().is_err() && !host.starts_with('[') => {
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map(|a| a.collect())
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        out.extend(expand(url, addrs));
    }
    out
}

fn host_port(url: &str) -> Option<(String, u16)> {
    let uri = url.parse::<http::Uri>().ok()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    Some((uri.host()?.to_string(), port))
}

/// `url` as targets, given the addresses its name resolved to: one per
/// address when there are several (sorted, so that every worker tries them
/// in the same order and a restart does not shuffle them), else `url`.
fn expand(url: &str, mut addrs: Vec<std::net::SocketAddr>) -> Vec<Target> {
    addrs.sort();
    addrs.dedup();
    let uri = url.parse::<http::Uri>().ok();
    match uri {
        Some(uri) if addrs.len() > 1 => {
            let scheme = uri.scheme_str().unwrap_or("http");
            let path = uri.path_and_query().map_or("", |p| p.as_str()).trim_end_matches('/');
            addrs
                .into_iter()
                .map(|a| Target {
                    url: url.to_string(),
                    dial: format!("{scheme}://{a}{path}"),
                })
                .collect()
        }
        _ => vec![Target {
            url: url.to_string(),
            dial: url.to_string(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_split_and_each_gets_a_scheme() {
        assert_eq!(
            urls(" a:8080, http://b:9090/ ,,c"),
            ["http://a:8080", "http://b:9090", "http://c"]
        );
        assert!(urls("").is_empty());
    }

    #[test]
    fn a_name_with_several_addresses_is_several_targets_in_a_fixed_order() {
        let addrs = vec![
            "10.0.0.2:8080".parse().unwrap(),
            "[fd00::1]:8080".parse().unwrap(),
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.2:8080".parse().unwrap(),
        ];
        let t = expand("http://coord:8080", addrs);
        let dials: Vec<_> = t.iter().map(|t| t.dial.as_str()).collect();
        assert_eq!(
            dials,
            ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://[fd00::1]:8080"]
        );
        assert!(t.iter().all(|t| t.url == "http://coord:8080"));
        let one = expand("http://coord:8080", vec!["10.0.0.1:8080".parse().unwrap()]);
        assert_eq!(
            one[0].dial, "http://coord:8080",
            "one address: the name is dialed as configured"
        );
        assert_eq!(expand("http://coord:8080", Vec::new())[0].dial, "http://coord:8080");
    }

    #[tokio::test]
    async fn addresses_are_dialed_as_given() {
        let t = resolve(&urls("127.0.0.1:1,[::1]:2")).await;
        let dials: Vec<_> = t.iter().map(|t| t.dial.as_str()).collect();
        assert_eq!(dials, ["http://127.0.0.1:1", "http://[::1]:2"]);
    }
}
