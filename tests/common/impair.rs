//! A lossy, slow link without `tc netem`: the kernels these tests run on
//! are built without `sch_netem` (CONFIG_NET_SCH_NETEM unset), so every
//! packet crossing a namespace's veth end is queued to userspace
//! (iptables NFQUEUE, inside the namespace) and this delay line holds it
//! for `delay` +- `jitter` (uniform, so packets reorder as netem's do)
//! before letting it go, or drops it with probability `loss`. Both
//! directions are impaired alike, so a round trip costs twice the delay.
//!
//! The thread enters the namespace itself (`setns` affects only the
//! calling thread), so nothing outside the namespace is touched; the rules
//! go away with the namespace.

use super::netns::Netns;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a link is impaired.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    /// Fraction of packets dropped, each way.
    pub loss: f64,
}

/// A running delay line; stops (letting held packets go) when dropped.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    pub passed: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    ns: String,
}

const QUEUE: u16 = 7;

impl DelayLine {
    pub fn start(ns: &Netns, how: Impairment) -> DelayLine {
        let stop = Arc::new(AtomicBool::new(false));
        let (passed, dropped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, passed, dropped, name) = (stop.clone(), passed.clone(), dropped.clone(), ns.name.clone());
            std::thread::spawn(move || {
                let mut q = match open_in(&name) {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                run(&mut q, how, &stop, &passed, &dropped);
            })
        };
        ready_rx
            .recv()
            .expect("the delay line starts")
            .unwrap_or_else(|e| panic!("NFQUEUE in {}: {e}", ns.name));
        for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
            ns.exec(&[
                "iptables",
                "-A",
                chain,
                dir,
                &ns.ns_if,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &QUEUE.to_string(),
            ]);
        }
        DelayLine {
            stop,
            passed,
            dropped,
            thread: Some(thread),
            ns: ns.name.clone(),
        }
    }
}

fn open_in(ns: &str) -> std::io::Result<nfq::Queue> {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let mut q = nfq::Queue::open()?;
    q.bind(QUEUE)?;
    q.set_nonblocking(true);
    Ok(q)
}

fn run(q: &mut nfq::Queue, how: Impairment, stop: &AtomicBool, passed: &AtomicU64, dropped: &AtomicU64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1055);
    let mut held: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut msgs: std::collections::HashMap<u64, nfq::Message> = Default::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        loop {
            match q.recv() {
                Ok(mut m) => {
                    if rng.random_bool(how.loss) {
                        m.set_verdict(nfq::Verdict::Drop);
                        let _ = q.verdict(m);
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let j = how.jitter.as_secs_f64();
                    let d = how.delay.as_secs_f64() + if j > 0.0 { rng.random_range(-j..j) } else { 0.0 };
                    seq += 1;
                    held.push(Reverse((Instant::now() + Duration::from_secs_f64(d.max(0.0)), seq)));
                    msgs.insert(seq, m);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Reverse((_, id)) = held.pop().unwrap();
            if let Some(mut m) = msgs.remove(&id) {
                m.set_verdict(nfq::Verdict::Accept);
                let _ = q.verdict(m);
                passed.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Stopping: what is held goes now.
    for (_, mut m) in msgs {
        m.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(m);
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        // Rules first, so nothing new is queued to a closed queue (which
        // would drop it).
        let _ = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, "iptables", "-F"])
            .status();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
