//! What this machine offers, as told to the coordinator in Hello.

use super::WorkerConfig;
use crate::proto::{Capabilities, Gpu};

pub fn detect(config: &WorkerConfig, runtime: Option<&str>) -> Capabilities {
    Capabilities {
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes: total_memory().unwrap_or(0),
        gpus: config
            .gpus
            .iter()
            .map(|(model, mem)| Gpu {
                model: model.clone(),
                memory_bytes: *mem,
            })
            .collect(),
        labels: config.labels.iter().cloned().collect(),
        runtimes: runtime.into_iter().map(str::to_string).collect(),
    }
}

/// MemTotal from /proc/meminfo (Linux); None elsewhere.
fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
