//! What a service container is created from: its name, its labels, the
//! digest that says whether an existing container can be adopted, and the
//! Engine API body.

use super::{DockerContext, Placement, OWNER_LABEL, SERVICE_LABEL, SPEC_LABEL, WORKER_LABEL};
use crate::worker::runtime::RunSpec;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, PortBinding};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// `edgeplane-<worker>-<service>`, with anything Docker refuses made `-`.
pub fn container_name(worker: &str, service: &str) -> String {
    format!("edgeplane-{worker}-{service}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A digest of everything the container is created from.
pub(super) fn spec_digest(spec: &RunSpec, ctx: &DockerContext, placement: &Placement) -> String {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update(s.as_bytes());
        h.update([0]);
    };
    put(&spec.name);
    put(&spec.port.to_string());
    put(&spec.image);
    put(&spec.command.len().to_string());
    spec.command.iter().for_each(|a| put(a));
    for (k, v) in &spec.env {
        put(k);
        put(v);
    }
    put(&format!("{placement:?} gpus={} all={}", ctx.gpus, ctx.publish_all));
    let d = h.finalize();
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// `repo[:tag]` or `repo@digest` -> (repo, tag or digest); `latest` when none.
pub(super) fn split_image(image: &str) -> (&str, &str) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo, digest);
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

pub(super) fn create_body(
    spec: &RunSpec,
    ctx: &DockerContext,
    placement: &Placement,
    digest: &str,
) -> ContainerCreateBody {
    let port = format!("{}/tcp", spec.port);
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("PORT={}", spec.port));
    env.push(format!("EDGEPLANE_SERVICE={}", spec.name));
    env.push(format!("EDGEPLANE_WORKER={}", ctx.worker_name));
    let labels = HashMap::from([
        (OWNER_LABEL.to_string(), ctx.owner.clone()),
        (SERVICE_LABEL.to_string(), spec.name.clone()),
        (WORKER_LABEL.to_string(), ctx.worker_name.clone()),
        (SPEC_LABEL.to_string(), digest.to_string()),
    ]);
    let publish_on = match placement {
        _ if ctx.publish_all => Some("0.0.0.0"),
        Placement::Host => Some("127.0.0.1"),
        Placement::Network(_) => None,
    };
    let port_bindings = publish_on.map(|ip| {
        HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some(ip.to_string()),
                host_port: Some(spec.port.to_string()),
            }]),
        )])
    });
    let device_requests = ctx.gpus.then(|| {
        vec![DeviceRequest {
            count: Some(-1),
            capabilities: Some(vec![vec!["gpu".to_string()]]),
            ..Default::default()
        }]
    });
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        labels: Some(labels),
        exposed_ports: Some(vec![port]),
        host_config: Some(HostConfig {
            port_bindings,
            device_requests,
            network_mode: match placement {
                Placement::Network(n) => Some(n.clone()),
                Placement::Host => None,
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
