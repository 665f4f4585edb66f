//! The programs the bench runs (wrk, nginx, rathole, taskset, perf, the
//! edgeplane binary), found or named with how to install them.

use super::settings::Settings;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

pub struct Tools {
    pub wrk: PathBuf,
    pub nginx: PathBuf,
    pub rathole: PathBuf,
    pub taskset: Option<PathBuf>,
    pub perf: Option<PathBuf>,
    pub edgeplane: PathBuf,
}

pub fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // `cargo install` puts binaries here, which is not always on PATH.
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.push("/usr/sbin".into());
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

pub fn find_tools(s: &Settings) -> Result<Tools> {
    let mut missing = Vec::new();
    let mut need = |name: &str, how: &str| {
        let p = which(name);
        if p.is_none() {
            missing.push(format!("  {name}: {how}"));
        }
        p.unwrap_or_default()
    };
    let wrk = need("wrk", "apt-get install -y wrk");
    let nginx = need("nginx", "apt-get install -y nginx");
    let rathole = need(
        "rathole",
        "cargo install rathole   (without --locked; compiles for a few minutes)",
    );
    let taskset = if s.pin.is_some() {
        Some(need(
            "taskset",
            "apt-get install -y util-linux (or PROXY_BENCH_PIN=off)",
        ))
    } else {
        None
    };
    let perf = if s.perf.is_some() {
        Some(need("perf", "apt-get install -y linux-perf"))
    } else {
        None
    };
    // Cargo builds the binary (same profile) for the bench and names it here.
    let edgeplane = PathBuf::from(env!("CARGO_BIN_EXE_edgeplane"));
    if !edgeplane.is_file() {
        missing.push(format!(
            "  {}: cargo bench builds it; run the bench through cargo",
            edgeplane.display()
        ));
    }
    if !missing.is_empty() {
        bail!("missing tools; install them and run again:\n{}", missing.join("\n"));
    }
    Ok(Tools {
        wrk,
        nginx,
        rathole,
        taskset,
        perf,
        edgeplane,
    })
}

/// First line of `program args` (stdout, else stderr), for the record.
pub fn version(program: &Path, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_string()
        }
        Err(_) => "?".into(),
    }
}

/// `rathole --version` prints its name, then `Build Version: x.y.z` further down.
pub fn rathole_version(program: &Path) -> String {
    let out = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build Version:"))
        .map_or("?", str::trim);
    format!("rathole {v}")
}

pub fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
