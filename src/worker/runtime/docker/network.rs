//! Where service containers run: on the worker's own Docker network when
//! the worker itself runs in a container (found from its mounts), else on
//! the host.

use super::Placement;
use bollard::Docker;

/// The network of the container this worker runs in, if it runs in one
/// (the first user-defined network; `bridge` only when there is no other).
pub(super) async fn own_network(docker: &Docker) -> Placement {
    let Some(me) = own_container_id() else {
        return Placement::Host;
    };
    let Ok(info) = docker.inspect_container(&me, None).await else {
        // Not a container of this engine (another engine's socket, say).
        return Placement::Host;
    };
    let mode = info.host_config.and_then(|h| h.network_mode).unwrap_or_default();
    if mode == "host" {
        return Placement::Host;
    }
    let mut nets: Vec<String> = info
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    nets.retain(|n| n != "host" && n != "none");
    nets.sort_by_key(|n| (n == "bridge", n.clone()));
    nets.into_iter().next().map_or(Placement::Host, Placement::Network)
}

/// This process's container id, if it runs in a Docker container.
pub(super) fn own_container_id() -> Option<String> {
    container_id_from_mounts(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The engine bind-mounts `/var/lib/docker/containers/<id>/hostname` on
/// the container's `/etc/hostname` (and so for `hosts`, `resolv.conf`).
/// Only those mount points count: a process on the host sees other
/// containers' paths in its mount table too.
pub(super) fn container_id_from_mounts(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (root, mount_point) = (f.get(3)?, f.get(4)?);
        if !matches!(*mount_point, "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf") {
            return None;
        }
        let rest = &root[root.find("/containers/")? + "/containers/".len()..];
        let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
        (id.len() == 64).then_some(id)
    })
}
