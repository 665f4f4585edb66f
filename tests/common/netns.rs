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

fn next() -> u8 {
    NEXT.fetch_add(1, Ordering::Relaxed)
}

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
        let n = next();
        let ns = Netns::bare(n, Ipv4Addr::new(10, 211, n, 1), Ipv4Addr::new(10, 211, n, 2));
        // From here on, Drop cleans up whatever of the rest was made.
        ns.veth_to(None);
        run(&["ip", "addr", "add", &format!("{}/24", ns.host), "dev", &ns.host_if]);
        run(&["ip", "link", "set", &ns.host_if, "up"]);
        ns.configure();
        ns
    }

    /// A namespace made, with its names, and nothing in it yet.
    fn bare(n: u8, host: Ipv4Addr, addr: Ipv4Addr) -> Netns {
        static CLEAN: std::sync::Once = std::sync::Once::new();
        CLEAN.call_once(remove_stale);
        let pid = std::process::id();
        // Interface names: at most 15 bytes.
        let tag = format!("{:x}{n:02x}", pid % 0x10000);
        let ns = Netns {
            name: format!("{PREFIX}{pid}-{n}"),
            host_if: format!("efh{tag}"),
            ns_if: format!("efn{tag}"),
            host,
            addr,
        };
        run(&["ip", "netns", "add", &ns.name]);
        ns
    }

    /// The veth pair: `ns_if` inside, `host_if` in `other` (the root
    /// namespace when `None`).
    fn veth_to(&self, other: Option<&str>) {
        run(&[
            "ip",
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.ns_if,
        ]);
        run(&["ip", "link", "set", &self.ns_if, "netns", &self.name]);
        if let Some(o) = other {
            run(&["ip", "link", "set", &self.host_if, "netns", o]);
        }
    }

    /// Address, links up, and the empty nft table faults go into.
    fn configure(&self) {
        self.exec(&["ip", "addr", "add", &format!("{}/24", self.addr), "dev", &self.ns_if]);
        self.exec(&["ip", "link", "set", &self.ns_if, "up"]);
        self.exec(&["ip", "link", "set", "lo", "up"]);
        self.nft(
            "add table inet fault\n\
             add chain inet fault in { type filter hook input priority 0; policy accept; }\n\
             add chain inet fault out { type filter hook output priority 0; policy accept; }",
        );
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

    /// Drops what crosses between this namespace and `peer` (only its
    /// `port`, when given): one host cut off from one other, the rest of
    /// the network untouched.
    pub fn cut_from(&self, peer: Ipv4Addr, port: Option<u16>) {
        let (to, from) = match port {
            Some(p) => (format!("tcp dport {p}"), format!("tcp sport {p}")),
            None => (String::new(), String::new()),
        };
        self.nft(&format!(
            "add rule inet fault out ip daddr {peer} {to} drop\nadd rule inet fault in ip saddr {peer} {from} drop"
        ));
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
        // Deleting the namespace deletes the veth pair with it: the link
        // is usually gone by the next line, and saying so on stderr is noise.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A switched network: a bridge in a namespace of its own (bridged traffic
/// there meets no firewall: the root namespace's FORWARD policy, Docker's
/// DROP, never sees it), with the root namespace and any number of host
/// namespaces attached, on 10.212.n.0/24. The root namespace is `.1`.
pub struct Lan {
    switch: Netns,
    n: u8,
    next_host: u8,
    pub root: Ipv4Addr,
    root_if: String,
}

impl Lan {
    pub fn new() -> Lan {
        let n = next();
        let switch = Netns::bare(n, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"]);
        switch.exec(&["ip", "link", "set", "br0", "up"]);
        // The root namespace's port: `host_if` stays in the root namespace.
        let root = Ipv4Addr::new(10, 212, n, 1);
        switch.veth_to(None);
        switch.exec(&["ip", "link", "set", &switch.ns_if, "master", "br0"]);
        switch.exec(&["ip", "link", "set", &switch.ns_if, "up"]);
        run(&["ip", "addr", "add", &format!("{root}/24"), "dev", &switch.host_if]);
        run(&["ip", "link", "set", &switch.host_if, "up"]);
        let root_if = switch.host_if.clone();
        Lan {
            switch,
            n,
            next_host: 10,
            root,
            root_if,
        }
    }

    /// A new host namespace on the network.
    pub fn host(&mut self) -> Netns {
        let k = self.next_host;
        self.next_host += 1;
        let addr = Ipv4Addr::new(10, 212, self.n, k);
        let ns = Netns::bare(next(), self.root, addr);
        // Its `host_if` goes into the switch, on the bridge.
        ns.veth_to(Some(&self.switch.name));
        self.switch.exec(&["ip", "link", "set", &ns.host_if, "master", "br0"]);
        self.switch.exec(&["ip", "link", "set", &ns.host_if, "up"]);
        ns.configure();
        ns
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.root_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
