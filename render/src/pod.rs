//! The workload: ServiceAccount, gateway ConfigMap, Deployment, Service and PDB.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ClientIPConfig, ConfigMap, ConfigMapKeySelector, ConfigMapVolumeSource,
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, SessionAffinityConfig, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use palisade_core::config::{FILE_NAME, MOUNT_DIR};
use palisade_crds::MCPServer;
use palisade_crds::mcpserver::{Resources, Transport};

use crate::gateway_config::{
    AUDIT_KEY_DIR, CLIENT_CA_DIR, OIDC_CA_DIR, REMOTE_CA_DIR, STATE_DIR, STORE_CA_DIR,
    STORE_SECRET_DIR, TLS_DIR, UPSTREAM_CA_DIR, UPSTREAM_SECRET_DIR,
};
use crate::labels::Meta;
use crate::{
    ADMIN_PORT, BRIDGE_BINARY, BRIDGE_SOCKET, CONFIG_HASH_ANNOTATION, EGRESS_HOSTS_ANNOTATION,
    GATEWAY_PORT, RenderOptions, names,
};

/// UID/GID the pod runs as unless the spec names another non-zero UID (distroless "nonroot").
pub const DEFAULT_UID: i64 = palisade_crds::SERVER_UID;
/// How long a client sticks to one gateway replica after its last connection.
const SESSION_AFFINITY_SECONDS: i32 = 10_800;
/// Environment the stdio bridge passes to the server besides declared variables.
const BRIDGE_BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ"];

pub(crate) fn service_account(meta: &Meta) -> ServiceAccount {
    ServiceAccount {
        metadata: meta.object(&meta.name),
        // The server never talks to the Kubernetes API; no token is mounted anywhere.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

pub(crate) fn config_map(meta: &Meta, config_json: String) -> ConfigMap {
    ConfigMap {
        metadata: meta.object(&names::config_map(&meta.name)),
        data: Some(BTreeMap::from([(FILE_NAME.to_string(), config_json)])),
        immutable: Some(false),
        ..ConfigMap::default()
    }
}

/// The container security context every Palisade container gets (PSS `restricted`).
pub fn hardened_security_context(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(DEFAULT_UID),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), add: None }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

fn memory_dir(name: &str, size: &str) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_string()),
            size_limit: Some(Quantity(size.to_string())),
        }),
        ..Volume::default()
    }
}

fn secret_volume(name: &str, secret: &str, keys: &[String]) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            // Owner and group read only; the pod's fsGroup makes them readable to the UID.
            default_mode: Some(0o440),
            items: (!keys.is_empty()).then(|| {
                keys.iter()
                    .map(|k| KeyToPath { key: k.clone(), path: k.clone(), mode: None })
                    .collect()
            }),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn requirements(r: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
        limits: (!r.limits.is_empty()).then(|| r.limits.clone()),
        ..ResourceRequirements::default()
    }
}

fn gateway_resources(server: &MCPServer) -> ResourceRequirements {
    match &server.spec.gateway.resources {
        Some(r) => requirements(r),
        None => {
            let q = |s: &str| Quantity(s.to_string());
            ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), q("50m")),
                    ("memory".to_string(), q("64Mi")),
                ])),
                limits: Some(BTreeMap::from([
                    ("cpu".to_string(), q("500m")),
                    ("memory".to_string(), q("128Mi")),
                ])),
                ..ResourceRequirements::default()
            }
        }
    }
}

fn server_env(server: &MCPServer) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = server
        .spec
        .env
        .iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: e.value.clone(),
            value_from: e.value_from.as_ref().map(|src| EnvVarSource {
                secret_key_ref: src.secret_key_ref.as_ref().map(|r| SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                config_map_key_ref: src.config_map_key_ref.as_ref().map(|r| ConfigMapKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect();
    // Images rarely have a home directory for an arbitrary UID, and the root filesystem is
    // read-only: point HOME at the first scratch directory unless the spec sets it.
    if !env.iter().any(|e| e.name == "HOME")
        && let Some(first) = server.spec.scratch.first()
    {
        env.push(EnvVar { name: "HOME".into(), value: Some(first.path.clone()), value_from: None });
    }
    env
}

/// argv of the server container: for stdio, the bridge wrapping the spec's argv.
fn server_command(server: &MCPServer) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let spec = &server.spec;
    match spec.transport {
        Transport::Stdio => {
            let sb = &spec.sandbox;
            let mut allow: Vec<String> = BRIDGE_BASE_ENV.iter().map(|s| s.to_string()).collect();
            allow.extend(spec.env.iter().map(|e| e.name.clone()));
            allow.extend(sb.env_allow.iter().cloned());
            allow.sort();
            allow.dedup();
            let mut cmd = vec![
                BRIDGE_BINARY.to_string(),
                "bridge".to_string(),
                format!("--socket={BRIDGE_SOCKET}"),
                format!("--rlimit-cpu={}", sb.cpu_seconds),
                format!("--rlimit-as={}", sb.address_space_bytes),
                format!("--rlimit-nofile={}", sb.open_files),
                format!("--rlimit-nproc={}", sb.processes),
                format!("--env-allow={}", allow.join(",")),
            ];
            if let Some(lifetime) = sb.max_lifetime_seconds {
                cmd.push(format!("--max-lifetime={lifetime}"));
            }
            cmd.push("--".to_string());
            cmd.extend(spec.command.iter().cloned());
            cmd.extend(spec.args.iter().cloned());
            (Some(cmd), None)
        }
        Transport::StreamableHttp | Transport::Sse => (
            (!spec.command.is_empty()).then(|| spec.command.clone()),
            (!spec.args.is_empty()).then(|| spec.args.clone()),
        ),
    }
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("admin".to_string()),
            scheme: Some("HTTP".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

pub(crate) fn deployment(
    server: &MCPServer,
    meta: &Meta,
    opts: &RenderOptions,
    image: Option<&str>,
    config_hash: &str,
) -> Deployment {
    let spec = &server.spec;
    let uid = spec.run_as_user.unwrap_or(DEFAULT_UID);
    // A remote server has no container here: the pod is its gateway alone.
    let stdio = image.is_some() && spec.transport == Transport::Stdio;

    let mut volumes = Vec::new();
    let mut server_mounts = Vec::new();
    let workload_dirs = if image.is_some() { spec.scratch.as_slice() } else { &[] };
    for (i, dir) in workload_dirs.iter().enumerate() {
        let vol = format!("scratch-{i}");
        volumes.push(memory_dir(&vol, &dir.size_limit.0));
        server_mounts.push(mount(&vol, &dir.path, false));
    }
    for (i, s) in spec.secret_mounts.iter().enumerate() {
        let vol = format!("secret-{i}");
        volumes.push(secret_volume(&vol, &s.secret_name, &s.keys));
        server_mounts.push(mount(&vol, &s.mount_path, true));
    }

    let mut gateway_mounts = vec![
        mount("gateway-config", MOUNT_DIR, true),
        mount("gateway-tls", TLS_DIR, true),
        mount("gateway-tmp", "/tmp", false),
        mount("gateway-state", STATE_DIR, false),
    ];
    volumes.push(Volume {
        name: "gateway-config".to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::config_map(&meta.name),
            default_mode: Some(0o444),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    });
    let tls_secret =
        spec.gateway.tls_secret_name.clone().unwrap_or_else(|| names::tls_secret(&meta.name));
    volumes.push(secret_volume("gateway-tls", &tls_secret, &[]));
    volumes.push(memory_dir("gateway-tmp", "16Mi"));
    volumes.push(memory_dir("gateway-state", "1Mi"));
    if let Some(mtls) = &spec.auth.mtls {
        let r = &mtls.client_ca_secret_ref;
        volumes.push(secret_volume("client-ca", &r.name, std::slice::from_ref(&r.key)));
        gateway_mounts.push(mount("client-ca", CLIENT_CA_DIR, true));
    }
    if let Some(r) = &spec.auth.oidc_ca_secret_ref {
        volumes.push(secret_volume("oidc-ca", &r.name, std::slice::from_ref(&r.key)));
        gateway_mounts.push(mount("oidc-ca", OIDC_CA_DIR, true));
    }
    if let Some(k) = &spec.audit.signing_key_secret_ref {
        volumes.push(secret_volume("audit-key", &k.name, std::slice::from_ref(&k.key)));
        gateway_mounts.push(mount("audit-key", AUDIT_KEY_DIR, true));
    }
    // The upstream credential reaches the gateway container only (never the server's).
    if let Some(u) = &spec.upstream_auth {
        let secret = u
            .header
            .as_ref()
            .map(|h| &h.secret_ref)
            .or(u.token_exchange.as_ref().map(|t| &t.client_secret_ref));
        if let Some(r) = secret {
            volumes.push(secret_volume("upstream-secret", &r.name, std::slice::from_ref(&r.key)));
            gateway_mounts.push(mount("upstream-secret", UPSTREAM_SECRET_DIR, true));
        }
        if let Some(r) = u.token_exchange.as_ref().and_then(|t| t.ca_secret_ref.as_ref()) {
            volumes.push(secret_volume("upstream-ca", &r.name, std::slice::from_ref(&r.key)));
            gateway_mounts.push(mount("upstream-ca", UPSTREAM_CA_DIR, true));
        }
    }
    if let Some(r) = spec.remote.as_ref().and_then(|r| r.ca_secret_ref.as_ref()) {
        volumes.push(secret_volume("remote-ca", &r.name, std::slice::from_ref(&r.key)));
        gateway_mounts.push(mount("remote-ca", REMOTE_CA_DIR, true));
    }
    // The store's password reaches the gateway container only.
    if let Some(store) = &spec.gateway.state {
        let r = &store.password_secret_ref;
        volumes.push(secret_volume("store-secret", &r.name, std::slice::from_ref(&r.key)));
        gateway_mounts.push(mount("store-secret", STORE_SECRET_DIR, true));
        if let Some(r) = &store.ca_secret_ref {
            volumes.push(secret_volume("store-ca", &r.name, std::slice::from_ref(&r.key)));
            gateway_mounts.push(mount("store-ca", STORE_CA_DIR, true));
        }
    }

    let mut init_containers = Vec::new();
    if stdio {
        volumes.push(memory_dir("bridge-bin", "128Mi"));
        volumes.push(memory_dir("bridge-run", "1Mi"));
        server_mounts.push(mount("bridge-bin", "/palisade/bin", true));
        server_mounts.push(mount("bridge-run", "/palisade/run", false));
        gateway_mounts.push(mount("bridge-run", "/palisade/run", false));
        init_containers.push(Container {
            name: "install-bridge".to_string(),
            image: Some(opts.gateway_image.clone()),
            command: Some(vec![
                "/palisade-gateway".to_string(),
                "install".to_string(),
                BRIDGE_BINARY.to_string(),
            ]),
            security_context: Some(hardened_security_context(uid)),
            resources: Some(gateway_resources(server)),
            volume_mounts: Some(vec![mount("bridge-bin", "/palisade/bin", false)]),
            ..Container::default()
        });
    }

    let (command, args) = server_command(server);
    let server_container = image.map(|image| Container {
        name: "server".to_string(),
        image: Some(image.to_string()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command,
        args,
        env: Some(server_env(server)),
        security_context: Some(hardened_security_context(uid)),
        resources: Some(requirements(&spec.resources)),
        volume_mounts: Some(server_mounts),
        // No ports: the server is reachable only through the gateway on loopback.
        ..Container::default()
    });
    let gateway_container = Container {
        name: "gateway".to_string(),
        image: Some(opts.gateway_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(vec!["/palisade-gateway".to_string()]),
        args: Some(vec![
            "serve".to_string(),
            format!("--config={MOUNT_DIR}/{}", palisade_core::config::FILE_NAME),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("https".to_string()),
                container_port: GATEWAY_PORT,
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".to_string()),
                container_port: ADMIN_PORT,
                protocol: Some("TCP".to_string()),
                ..ContainerPort::default()
            },
        ]),
        // Ready only after the gateway completed a protocol handshake with the server.
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        env: Some(vec![EnvVar {
            name: "RUST_LOG".to_string(),
            value: Some("info".to_string()),
            value_from: None,
        }]),
        // Never the server's UID: the server cannot read the gateway's files or signal it.
        security_context: Some(hardened_security_context(palisade_crds::GATEWAY_UID)),
        resources: Some(gateway_resources(server)),
        volume_mounts: Some(gateway_mounts),
        ..Container::default()
    };

    let mut annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string()),
        ("kubectl.kubernetes.io/default-container".to_string(), "gateway".to_string()),
    ]);
    let hosts = crate::network::egress_hosts(server);
    if !hosts.is_empty() {
        annotations.insert(EGRESS_HOSTS_ANNOTATION.to_string(), hosts.join(","));
    }

    let pod = PodSpec {
        service_account_name: Some(meta.name.clone()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        share_process_namespace: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(DEFAULT_UID),
            fs_group: Some(DEFAULT_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        containers: server_container.into_iter().chain([gateway_container]).collect(),
        volumes: Some(volumes),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };

    Deployment {
        metadata: meta.object(&meta.name),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            revision_history_limit: Some(3),
            selector: LabelSelector {
                match_labels: Some(meta.selector.clone()),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(meta.labels.clone()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

pub(crate) fn service(meta: &Meta) -> Service {
    Service {
        metadata: meta.object(&meta.name),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(meta.selector.clone()),
            // Sessions, approvals and per-session budgets live in one gateway replica's memory:
            // a client keeps reaching the replica that holds them (kube-proxy's default 3 h).
            session_affinity: Some("ClientIP".to_string()),
            session_affinity_config: Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig { timeout_seconds: Some(SESSION_AFFINITY_SECONDS) }),
            }),
            ports: Some(vec![ServicePort {
                name: Some("https".to_string()),
                port: GATEWAY_PORT,
                target_port: Some(IntOrString::String("https".to_string())),
                protocol: Some("TCP".to_string()),
                app_protocol: Some("https".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub(crate) fn pod_disruption_budget(
    server: &MCPServer,
    meta: &Meta,
) -> Option<PodDisruptionBudget> {
    (server.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta.object(&meta.name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(meta.selector.clone()),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}
