//! Network namespaces for fault tests: a namespace per host, linked to the
//! test's own (root) namespace by a veth pair, and the faults a real link
//! has: a partition (nft DROP on the namespace's end), one direction cut;
//! loss and delay are `impair::DelayLine`'s. Everything a [`Netns`] made goes away
//! when it is dropped, panics included; namespaces a killed test run left
//! behind are removed by the next one.
//!
//! These need root, `ip` and `nft`: a test that uses them fails when
//! they are missing (it does not skip).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

/// Namespaces this harness makes are named `epf-<pid>-<n>`.
const PREFIX: &str = "epf-";

/// One namespace, its veth pair and the addresses on it: the root
/// namespace's end is `host` (10.211.n.1), the namespace's end `addr`
/// (10.211.n.2), a /24 of their own.
pub struct Netns {
    pub name: String,
    /// The veth end in the root namespace.
    pub host_if: String,
    /// The veth end inside the namespace.
    pub ns_if: String,
    pub host: Ipv4Addr,
    pub addr: Ipv4Addr,
}

static NEXT: AtomicU8 = AtomicU8::new(1);

/// Runs a command, panicking with its output when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (the fault tests need iproute2, nftables and root)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes namespaces of earlier runs whose test process is gone.
fn remove_stale() {
    let list = run(&["ip", "netns", "list"]);
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: u32 = rest.split('-').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            kill_inside(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// SIGKILLs every process still running inside namespace `name`.
fn kill_inside(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Netns {
    /// A new namespace linked to the root one, loopback and link up.
    pub fn new() -> Netns {
        static CLEAN: std::sync::Once = std::sync::Once::new();
        CLEAN.call_once(remove_stale);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}-{n}");
        // Interface names: at most 15 bytes.
        let tag = format!("{:x}{n:02x}", pid % 0x10000);
        let (host_if, ns_if) = (format!("efh{tag}"), format!("efn{tag}"));
        let host = Ipv4Addr::new(10, 211, n, 1);
        let addr = Ipv4Addr::new(10, 211, n, 2);
        let ns = Netns {
            name,
            host_if,
            ns_if,
            host,
            addr,
        };
        run(&["ip", "netns", "add", &ns.name]);
        // From here on, Drop cleans up whatever of the rest was made.
        run(&[
            "ip",
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]);
        run(&["ip", "link", "set", &ns.ns_if, "netns", &ns.name]);
        run(&["ip", "addr", "add", &format!("{host}/24"), "dev", &ns.host_if]);
        run(&["ip", "link", "set", &ns.host_if, "up"]);
        ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &ns.ns_if]);
        ns.exec(&["ip", "link", "set", &ns.ns_if, "up"]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // The nft table partitions go into; empty (nothing dropped) until then.
        ns.nft(
            "add table inet fault\n\
             add chain inet fault in { type filter hook input priority 0; policy accept; }\n\
             add chain inet fault out { type filter hook output priority 0; policy accept; }",
        );
        ns
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// The argv that runs `program args` inside the namespace.
    pub fn argv(&self, program: &str, args: &[String]) -> (String, Vec<String>) {
        let mut all = vec!["netns".into(), "exec".into(), self.name.clone(), program.into()];
        all.extend(args.iter().cloned());
        ("ip".into(), all)
    }

    fn nft(&self, script: &str) {
        let path = std::env::temp_dir().join(format!("{}-{}.nft", self.name, rand_suffix()));
        std::fs::write(&path, script).unwrap();
        self.exec(&["nft", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
    }

    /// Drops every packet crossing the link, both ways (the TCP connections
    /// over it stay open: nothing tells either end).
    pub fn partition(&self) {
        let i = &self.ns_if;
        self.nft(&format!(
            "add rule inet fault in iifname \"{i}\" drop\nadd rule inet fault out oifname \"{i}\" drop"
        ));
    }

    /// Drops only what the root namespace sends into this one.
    pub fn drop_inbound(&self) {
        self.nft(&format!("add rule inet fault in iifname \"{}\" drop", self.ns_if));
    }

    /// Ends a partition or a one-way drop.
    pub fn heal(&self) {
        self.nft("flush chain inet fault in\nflush chain inet fault out");
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_inside(&self.name);
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
    }
}
