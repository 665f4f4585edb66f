//! Placement: which catalog services each worker should run.
//!
//! A pure function of the catalog and the fleet, so it can be tested alone
//! and re-run on every change. Rules, in order:
//! - keep what is placed while its worker is alive (or disconnected for less
//!   than the grace) and it still fits: a worker that is merely loading keeps
//!   its assignment;
//! - fill gaps first (services with no provider at all), then by priority,
//!   one replica per service per round, up to `min_replicas`;
//! - a worker takes a service only if it meets the requirement (`gpu`: has a
//!   GPU; `storage` / `edge`: has that role in its `roles` label; `cpu`: any
//!   worker, GPU ones included) and has the free resources: GPU memory on a
//!   single GPU (a 24 GB model does not go on an 8 GB GPU), CPU cores, memory;
//! - among fitting workers, CPU services prefer workers without GPUs (keeping
//!   GPUs for what needs them), then the most free CPU.

use crate::catalog::{Catalog, CatalogEntry, Requirement};
use crate::proto::Capabilities;
use std::collections::{BTreeMap, BTreeSet};

/// One worker as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub worker_id: String,
    pub name: String,
    pub capabilities: Capabilities,
    /// Healthy and not draining: may be given new services.
    pub eligible: bool,
    /// Connected, or disconnected for less than the grace: keeps what it has.
    pub keep: bool,
    /// Services it runs by itself (count as providers, use no capacity here).
    pub declared: BTreeSet<String>,
    /// Services placed on it now.
    pub placed: BTreeSet<String>,
}

/// Free capacity of one worker while planning.
struct Room {
    gpus: Vec<u64>,
    cpu: f64,
    memory: u64,
    limited_memory: bool,
    roles: BTreeSet<String>,
}

impl Room {
    fn of(c: &Capabilities) -> Self {
        let roles = c
            .labels
            .get("roles")
            .map(|r| {
                r.split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Room {
            gpus: c.gpus.iter().map(|g| g.memory_bytes).collect(),
            cpu: c.cpu_cores as f64,
            memory: c.memory_bytes,
            // A worker that did not say how much memory it has is not limited by it.
            limited_memory: c.memory_bytes > 0,
            roles,
        }
    }

    fn meets(&self, e: &CatalogEntry) -> bool {
        match e.requires {
            Requirement::Gpu => !self.gpus.is_empty(),
            Requirement::Cpu => true,
            Requirement::Storage => self.roles.contains("storage"),
            Requirement::Edge => self.roles.contains("edge"),
        }
    }

    /// The GPU to use (the fullest one that still fits, to keep big ones free), if any is needed.
    fn gpu_slot(&self, e: &CatalogEntry) -> Option<Option<usize>> {
        if e.gpu_memory_bytes == 0 {
            return Some(None);
        }
        self.gpus
            .iter()
            .enumerate()
            .filter(|(_, free)| **free >= e.gpu_memory_bytes)
            .min_by_key(|(_, free)| **free)
            .map(|(i, _)| Some(i))
    }

    fn fits(&self, e: &CatalogEntry) -> bool {
        self.meets(e)
            && self.gpu_slot(e).is_some()
            && self.cpu + 1e-9 >= e.cpu
            && (!self.limited_memory || self.memory >= e.memory_bytes)
    }

    fn take(&mut self, e: &CatalogEntry) {
        if let Some(Some(i)) = self.gpu_slot(e) {
            self.gpus[i] -= e.gpu_memory_bytes;
        }
        self.cpu -= e.cpu;
        self.memory = self.memory.saturating_sub(e.memory_bytes);
    }
}

/// The placement for every worker: worker id -> services placed on it.
pub fn plan(catalog: &Catalog, workers: &[Candidate]) -> BTreeMap<String, BTreeSet<String>> {
    let mut rooms: Vec<Room> = workers.iter().map(|w| Room::of(&w.capabilities)).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> =
        workers.iter().map(|w| (w.worker_id.clone(), BTreeSet::new())).collect();
    let mut providers: BTreeMap<&str, usize> = BTreeMap::new();

    // Declared services count as providers wherever the worker is kept.
    for w in workers.iter().filter(|w| w.keep) {
        for s in &w.declared {
            *providers.entry(s.as_str()).or_default() += 1;
        }
    }
    // Keep what still fits, most important services first.
    let mut entries: Vec<&CatalogEntry> = catalog.entries().iter().map(|e| e.as_ref()).collect();
    entries.sort_by_key(|e| (e.priority, e.name.clone()));
    for e in &entries {
        for (i, w) in workers.iter().enumerate() {
            // Never more than the maximum: two workers can both hold a
            // placement when one comes back from a partition still running
            // what was re-placed while it was away; the first kept stays.
            let kept = providers.get(e.name.as_str()).copied().unwrap_or(0);
            if w.keep
                && w.placed.contains(&e.name)
                && !w.declared.contains(&e.name)
                && kept < e.max_replicas.max(1) as usize
                && rooms[i].fits(e)
            {
                rooms[i].take(e);
                out.get_mut(&w.worker_id)
                    .expect("every worker has an entry")
                    .insert(e.name.clone());
                *providers.entry(e.name.as_str()).or_default() += 1;
            }
        }
    }

    // Rounds: each round gives at most one more replica to each service short of
    // its minimum, gaps (no provider) first, then by priority.
    loop {
        let mut wanting: Vec<&CatalogEntry> = entries
            .iter()
            .copied()
            .filter(|e| {
                let have = providers.get(e.name.as_str()).copied().unwrap_or(0);
                have < e.min_replicas.max(1) as usize && have < e.max_replicas as usize
            })
            .collect();
        wanting.sort_by_key(|e| {
            (
                providers.get(e.name.as_str()).copied().unwrap_or(0) > 0,
                e.priority,
                e.name.clone(),
            )
        });
        let mut progressed = false;
        for e in wanting {
            let choice = workers
                .iter()
                .enumerate()
                .filter(|(i, w)| {
                    w.eligible
                        && !w.declared.contains(&e.name)
                        && !out[&w.worker_id].contains(&e.name)
                        && rooms[*i].fits(e)
                })
                .min_by(|(i, a), (j, b)| {
                    let gpu_a = !rooms[*i].gpus.is_empty() && e.requires != Requirement::Gpu;
                    let gpu_b = !rooms[*j].gpus.is_empty() && e.requires != Requirement::Gpu;
                    gpu_a
                        .cmp(&gpu_b)
                        .then(rooms[*j].cpu.total_cmp(&rooms[*i].cpu))
                        .then(a.name.cmp(&b.name))
                        .then(a.worker_id.cmp(&b.worker_id))
                })
                .map(|(i, _)| i);
            if let Some(i) = choice {
                rooms[i].take(e);
                out.get_mut(&workers[i].worker_id)
                    .expect("every worker has an entry")
                    .insert(e.name.clone());
                *providers.entry(e.name.as_str()).or_default() += 1;
                progressed = true;
            }
        }
        if !progressed {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Gpu;

    const GIB: u64 = 1 << 30;

    fn worker(name: &str, cpu: u32, gpus: &[u64]) -> Candidate {
        Candidate {
            worker_id: format!("id-{name}"),
            name: name.into(),
            capabilities: Capabilities {
                cpu_cores: cpu,
                memory_bytes: 64 * GIB,
                gpus: gpus
                    .iter()
                    .map(|m| Gpu {
                        model: "gpu".into(),
                        memory_bytes: m * GIB,
                    })
                    .collect(),
                labels: Default::default(),
                runtimes: vec!["process".into()],
            },
            eligible: true,
            keep: true,
            declared: BTreeSet::new(),
            placed: BTreeSet::new(),
        }
    }

    fn where_is(plan: &BTreeMap<String, BTreeSet<String>>, svc: &str) -> Vec<String> {
        plan.iter()
            .filter(|(_, s)| s.contains(svc))
            .map(|(w, _)| w.clone())
            .collect()
    }

    #[test]
    fn a_big_model_never_lands_on_a_small_gpu() {
        let cat = Catalog::embedded();
        let small = worker("small", 8, &[8]);
        let plan = plan(&cat, std::slice::from_ref(&small));
        assert!(
            where_is(&plan, "llm-inference").is_empty(),
            "24 GiB model on an 8 GiB GPU: {plan:?}"
        );
        assert_eq!(where_is(&plan, "vision-ocr"), ["id-small"]);

        let big = worker("big", 8, &[80]);
        let plan = super::plan(&cat, &[small, big]);
        assert_eq!(where_is(&plan, "llm-inference"), ["id-big"]);
    }

    #[test]
    fn gpu_memory_is_per_gpu_not_summed() {
        let cat = Catalog::embedded();
        // Two 16 GiB GPUs: 32 GiB in all, but no single GPU holds 24 GiB.
        let plan = plan(&cat, &[worker("twin", 8, &[16, 16])]);
        assert!(where_is(&plan, "llm-inference").is_empty(), "{plan:?}");
    }

    #[test]
    fn gaps_first_then_priority_and_cpu_services_avoid_gpus() {
        let cat = Catalog::embedded();
        // One core on the CPU box: room for the two half-core priority-2
        // services, not for the priority-3 one after them.
        let mut cpu = worker("cpu", 1, &[]);
        cpu.capabilities.memory_bytes = 0;
        let gpu = worker("gpu", 16, &[80]);
        let plan = plan(&cat, &[cpu, gpu]);
        // CPU services go to the CPU worker first, by priority; the rest spill onto the GPU worker.
        let on_cpu: Vec<&str> = plan["id-cpu"].iter().map(String::as_str).collect();
        assert_eq!(on_cpu, ["document-processing", "ner-extraction"], "{plan:?}");
        for svc in ["llm-inference", "vision-ocr", "rag-embeddings", "notes-coa"] {
            assert_eq!(where_is(&plan, svc), ["id-gpu"], "{svc}: {plan:?}");
        }
    }

    #[test]
    fn declared_services_are_not_placed_again_and_kept_placements_stay() {
        let cat = Catalog::embedded();
        let mut a = worker("a", 8, &[]);
        a.declared.insert("notes-coa".into());
        let mut b = worker("b", 8, &[]);
        b.placed.insert("ner-extraction".into());
        b.eligible = false; // loading or degraded: keeps, takes nothing new
        let plan = plan(&cat, &[a, b]);
        assert!(where_is(&plan, "notes-coa").is_empty(), "{plan:?}");
        assert_eq!(where_is(&plan, "ner-extraction"), ["id-b"]);
        assert_eq!(plan["id-b"].len(), 1);
    }

    #[test]
    fn two_workers_holding_one_replica_keep_it_once() {
        // A worker back from a partition still runs what was re-placed while
        // it was away: the maximum (one) holds, no duplicate.
        let cat = Catalog::embedded();
        let (mut a, mut b) = (worker("a", 8, &[]), worker("b", 8, &[]));
        a.placed.insert("ner-extraction".into());
        b.placed.insert("ner-extraction".into());
        let plan = plan(&cat, &[a, b]);
        assert_eq!(where_is(&plan, "ner-extraction").len(), 1, "{plan:?}");
    }

    #[test]
    fn a_lost_worker_gives_its_services_back() {
        let cat = Catalog::embedded();
        let mut gone = worker("gone", 8, &[80]);
        gone.placed.insert("llm-inference".into());
        gone.keep = false;
        gone.eligible = false;
        let spare = worker("spare", 8, &[40]);
        let plan = plan(&cat, &[gone, spare]);
        assert_eq!(where_is(&plan, "llm-inference"), ["id-spare"]);
        assert!(plan["id-gone"].is_empty());
    }

    #[test]
    fn roles_gate_storage_services() {
        let cat = Catalog::parse(
            "[[service]]\nname = \"blob\"\nrequires = \"storage\"\nport = 9000\n",
            "t",
        )
        .unwrap();
        let plain = worker("plain", 8, &[]);
        let mut store = worker("store", 8, &[]);
        store.capabilities.labels.insert("roles".into(), "storage, edge".into());
        let plan = plan(&cat, &[plain, store]);
        assert_eq!(where_is(&plan, "blob"), ["id-store"]);
    }
}
