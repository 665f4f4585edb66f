//! How a `bench soak` report reads: the table printed at the end (a row per
//! sample, then the verdicts) and the plot (`--svg`) of RSS, the round-trip
//! p99s, and open files and tasks over the run. Apart from the run itself
//! (`soak.rs`), which only gathers the figures.

use super::flatness::Flatness;
use super::soak::{SoakReport, SoakSample};
use super::svg::{self, Line, Panel};
use std::fmt::Write;

fn mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

fn verdict(f: &Flatness, unit: &str) -> String {
    format!(
        "{:?}: {:.1} -> {:.1} {unit} after the warm-up (min {:.1}, max {:.1}; fitted {:+.1} over the window, tolerance {:.1}; {} samples)",
        f.verdict, f.first, f.last, f.min, f.max, f.fitted_growth, f.tolerance, f.samples
    )
}

impl SoakReport {
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "edgeplane bench soak: {} workers ({} never stopped, {} flapping, the rest churning), {:.0} s, a sample every {:.0} s, {} CPUs",
            self.workers, self.stable, self.flappers, self.duration_s, self.sample_every_s, self.cpus
        );
        let _ = writeln!(
            o,
            "  {:>6} {:>8} {:>8} {:>6} {:>5} {:>6} {:>6} {:>8} {:>9} {:>9} {:>13} {:>13} {:>6} {:>5}",
            "t (s)",
            "RSS MiB",
            "anon MiB",
            "fds",
            "thr",
            "tasks",
            "cores",
            "ka p99",
            "steady p99",
            "flap p99",
            "steady req/f",
            "flap req/f",
            "conn",
            "load1"
        );
        for s in &self.samples {
            let _ = writeln!(
                o,
                "  {:>6.0} {:>8.1} {:>8.1} {:>6} {:>5} {:>6} {:>6.2} {:>8.2} {:>10.2} {:>9.2} {:>13} {:>13} {:>6} {:>5}",
                s.t_s,
                mib(s.rss_kib),
                mib(s.rss_anon_kib),
                s.fds,
                s.threads,
                s.tokio_tasks.map_or("-".into(), |t| t.to_string()),
                s.coordinator_cores,
                s.keepalive.p99_ms,
                s.steady.latency.p99_ms,
                s.flap.latency.p99_ms,
                format!("{}/{}", s.steady.requests, s.steady.failures),
                format!("{}/{}", s.flap.requests, s.flap.failures),
                s.connected,
                s.loadavg.map_or("-".into(), |l| format!("{:.2}", l[0]))
            );
        }
        let _ = writeln!(o, "  warm-up: first {:.0} s", self.warmup_s);
        let _ = writeln!(o, "  RSS           {}", verdict(&self.rss_mib, "MiB"));
        let _ = writeln!(o, "  anonymous RSS {}", verdict(&self.anon_mib, "MiB"));
        let _ = writeln!(o, "  open files    {}", verdict(&self.fds, ""));
        let _ = writeln!(o, "  threads       {}", verdict(&self.threads, ""));
        if let Some(t) = &self.tokio_tasks {
            let _ = writeln!(o, "  tokio tasks   {}", verdict(t, ""));
        }
        let _ = writeln!(o, "  flat: {}", if self.flat { "yes" } else { "NO" });
        let _ = writeln!(
            o,
            "  false positives (never-stopped workers not healthy): {} reports, {} workers {:?}",
            self.false_positives.reports, self.false_positives.workers, self.false_positives.examples
        );
        for (name, t) in [
            ("healthy replicas", &self.steady_total),
            ("flapping service", &self.flap_total),
        ] {
            let _ = writeln!(
                o,
                "  requests to {name}: {} ({:.0}/s), {} failed, p50/p99/max {:.2}/{:.2}/{:.2} ms {:?}",
                t.requests, t.req_per_s, t.failures, t.latency.p50_ms, t.latency.p99_ms, t.latency.max_ms, t.causes
            );
        }
        let c = &self.churn;
        let _ = writeln!(
            o,
            "  churn: {} drops and resumes, {} newcomers joined, {} left, {} readiness flips, {} id changes",
            c.disconnects, c.newcomers_joined, c.newcomers_left, c.flips, c.id_changes
        );
        let _ = writeln!(
            o,
            "  worst sample p99: keepalive {:.2} ms, healthy replicas {:.2} ms",
            self.worst_keepalive_p99_ms, self.worst_steady_p99_ms
        );
        let _ = writeln!(o, "  coordinator log: {}", self.coordinator_log);
        for n in &self.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        o
    }

    /// RSS, round-trip p99s, and open files and tasks, over minutes.
    pub fn svg(&self) -> String {
        let at = |f: &dyn Fn(&SoakSample) -> Option<f64>| -> Vec<(f64, f64)> {
            self.samples
                .iter()
                .filter_map(|s| Some((s.t_s / 60.0, f(s)?)))
                .collect()
        };
        let panels = vec![
            Panel {
                title: "coordinator resident memory".into(),
                unit: "MiB".into(),
                lines: vec![
                    Line {
                        label: "RSS".into(),
                        color: "#1f77b4",
                        points: at(&|s| Some(mib(s.rss_kib))),
                    },
                    Line {
                        label: "anonymous".into(),
                        color: "#9467bd",
                        points: at(&|s| Some(mib(s.rss_anon_kib))),
                    },
                ],
            },
            Panel {
                title: "p99 round trips, per sample".into(),
                unit: "ms".into(),
                lines: vec![
                    Line {
                        label: "keepalive".into(),
                        color: "#d62728",
                        points: at(&|s| Some(s.keepalive.p99_ms)),
                    },
                    Line {
                        label: "proxy, healthy replicas".into(),
                        color: "#2ca02c",
                        points: at(&|s| Some(s.steady.latency.p99_ms)),
                    },
                    Line {
                        label: "proxy, flapping service".into(),
                        color: "#ff7f0e",
                        points: at(&|s| Some(s.flap.latency.p99_ms)),
                    },
                ],
            },
            Panel {
                title: "open files and tokio tasks".into(),
                unit: "count".into(),
                lines: vec![
                    Line {
                        label: "open files".into(),
                        color: "#9467bd",
                        points: at(&|s| Some(s.fds as f64)),
                    },
                    Line {
                        label: "tokio tasks".into(),
                        color: "#8c564b",
                        points: at(&|s| s.tokio_tasks.map(|t| t as f64)),
                    },
                ],
            },
        ];
        svg::render(
            &format!(
                "edgeplane bench soak: {} workers with churn, {:.0} min",
                self.workers,
                self.duration_s / 60.0
            ),
            "minutes",
            &panels,
        )
    }
}
