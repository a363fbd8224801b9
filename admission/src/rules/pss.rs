//! Pod Security Standards, `restricted` profile (Kubernetes 1.33 definition), plus the extra
//! hardening Palisade requires of MCP workloads. Each control has a rule ID so tests can prove
//! every one of them on rendered output.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};

use crate::verdict::Verdict;

/// PSS `restricted` controls (which include the `baseline` ones).
pub const RESTRICTED_CONTROLS: &[&str] = &[
    "pss.hostProcess",
    "pss.hostNamespaces",
    "pss.privileged",
    "pss.capabilities",
    "pss.hostPathVolumes",
    "pss.hostPorts",
    "pss.appArmor",
    "pss.seLinux",
    "pss.procMount",
    "pss.seccomp",
    "pss.sysctls",
    "pss.volumeTypes",
    "pss.privilegeEscalation",
    "pss.runAsNonRoot",
    "pss.runAsUser",
];

/// Palisade's hardening beyond `restricted`.
pub const HARDENING_CONTROLS: &[&str] = &[
    "hardening.readOnlyRootFilesystem",
    "hardening.serviceAccountToken",
    "hardening.resourceLimits",
    "hardening.noAddedCapabilities",
];

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

const SELINUX_TYPES: &[&str] =
    &["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

struct ContainerView<'a> {
    path: String,
    name: &'a str,
    sc: Option<&'a SecurityContext>,
    container: &'a k8s_openapi::api::core::v1::Container,
}

fn containers<'a>(spec: &'a PodSpec, prefix: &str) -> Vec<ContainerView<'a>> {
    let mut out = Vec::new();
    for (field, list) in [
        ("initContainers", spec.init_containers.as_deref()),
        ("containers", Some(spec.containers.as_slice())),
    ] {
        for (i, c) in list.unwrap_or_default().iter().enumerate() {
            out.push(ContainerView {
                path: format!("{prefix}.{field}[{i}]"),
                name: &c.name,
                sc: c.security_context.as_ref(),
                container: c,
            });
        }
    }
    out
}

/// Checks a pod spec. `prefix` is the field path of the spec (`spec`, `spec.template.spec`);
/// `annotations` are the pod's (AppArmor may be set there).
pub fn check_pod_spec(
    spec: &PodSpec,
    annotations: Option<&BTreeMap<String, String>>,
    prefix: &str,
) -> Verdict {
    let mut v = Verdict::default();
    let psc = spec.security_context.as_ref();

    // Ephemeral containers are added through a subresource the webhook also sees, but a spec
    // that carries them is checked like any other container.
    for (i, c) in spec.ephemeral_containers.as_deref().unwrap_or_default().iter().enumerate() {
        let path = format!("{prefix}.ephemeralContainers[{i}]");
        if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
            v.deny(
                "pss.privileged",
                format!("{path}.securityContext.privileged"),
                "privileged containers are forbidden; remove privileged: true",
            );
        }
    }

    // Host process and namespaces.
    if psc.and_then(|s| s.windows_options.as_ref()).and_then(|w| w.host_process) == Some(true) {
        v.deny(
            "pss.hostProcess",
            format!("{prefix}.securityContext.windowsOptions.hostProcess"),
            "Windows host-process pods are forbidden; remove hostProcess",
        );
    }
    for (flag, name) in
        [(spec.host_network, "hostNetwork"), (spec.host_pid, "hostPID"), (spec.host_ipc, "hostIPC")]
    {
        if flag == Some(true) {
            v.deny(
                "pss.hostNamespaces",
                format!("{prefix}.{name}"),
                format!("sharing host namespaces is forbidden; set {name}: false or remove it"),
            );
        }
    }

    // Volumes.
    for (i, vol) in spec.volumes.as_deref().unwrap_or_default().iter().enumerate() {
        let path = format!("{prefix}.volumes[{i}]");
        if vol.host_path.is_some() {
            v.deny("pss.hostPathVolumes", format!("{path}.hostPath"), "hostPath volumes are forbidden; use an emptyDir, a Secret or a PersistentVolumeClaim");
            continue;
        }
        let allowed = vol.config_map.is_some()
            || vol.csi.is_some()
            || vol.downward_api.is_some()
            || vol.empty_dir.is_some()
            || vol.ephemeral.is_some()
            || vol.persistent_volume_claim.is_some()
            || vol.projected.is_some()
            || vol.secret.is_some();
        if !allowed {
            v.deny("pss.volumeTypes", path, "only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret volumes are allowed");
        }
    }

    // Sysctls.
    for (i, s) in psc.and_then(|s| s.sysctls.as_deref()).unwrap_or_default().iter().enumerate() {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            v.deny(
                "pss.sysctls",
                format!("{prefix}.securityContext.sysctls[{i}]"),
                format!("sysctl {} is not in the safe set; remove it", s.name),
            );
        }
    }

    // SELinux and AppArmor at pod level.
    if let Some(se) = psc.and_then(|s| s.se_linux_options.as_ref()) {
        selinux(&mut v, se, &format!("{prefix}.securityContext.seLinuxOptions"));
    }
    if psc.and_then(|s| s.app_armor_profile.as_ref()).is_some_and(|p| p.type_ == "Unconfined") {
        v.deny(
            "pss.appArmor",
            format!("{prefix}.securityContext.appArmorProfile.type"),
            "AppArmor must not be Unconfined; use RuntimeDefault",
        );
    }
    for (k, val) in annotations.into_iter().flatten() {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/") && val == "unconfined" {
            v.deny(
                "pss.appArmor",
                format!("metadata.annotations[{k}]"),
                "AppArmor must not be unconfined; remove the annotation",
            );
        }
    }

    let pod_seccomp = psc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
    if pod_seccomp == Some("Unconfined") {
        v.deny(
            "pss.seccomp",
            format!("{prefix}.securityContext.seccompProfile.type"),
            "seccomp must be RuntimeDefault or Localhost, not Unconfined",
        );
    }
    let pod_non_root = psc.and_then(|s| s.run_as_non_root);
    if psc.and_then(|s| s.run_as_user) == Some(0) {
        v.deny(
            "pss.runAsUser",
            format!("{prefix}.securityContext.runAsUser"),
            "running as UID 0 is forbidden; use a non-zero UID such as 65532",
        );
    }
    if spec.automount_service_account_token != Some(false) {
        v.deny(
            "hardening.serviceAccountToken",
            format!("{prefix}.automountServiceAccountToken"),
            "MCP servers get no Kubernetes API token; set automountServiceAccountToken: false",
        );
    }

    for c in containers(spec, prefix) {
        let sc = c.sc;
        let scp = format!("{}.securityContext", c.path);
        if sc.and_then(|s| s.windows_options.as_ref()).and_then(|w| w.host_process) == Some(true) {
            v.deny(
                "pss.hostProcess",
                format!("{scp}.windowsOptions.hostProcess"),
                "host-process containers are forbidden",
            );
        }
        if sc.and_then(|s| s.privileged) == Some(true) {
            v.deny(
                "pss.privileged",
                format!("{scp}.privileged"),
                format!("container {} is privileged; remove privileged: true", c.name),
            );
        }
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let drops_all =
            caps.and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            v.deny(
                "pss.capabilities",
                format!("{scp}.capabilities.drop"),
                format!("container {} must drop ALL capabilities", c.name),
            );
        }
        for (i, add) in caps.and_then(|c| c.add.as_ref()).into_iter().flatten().enumerate() {
            if add != "NET_BIND_SERVICE" {
                v.deny(
                    "pss.capabilities",
                    format!("{scp}.capabilities.add[{i}]"),
                    format!("capability {add} may not be added; remove it"),
                );
            } else {
                v.deny(
                    "hardening.noAddedCapabilities",
                    format!("{scp}.capabilities.add[{i}]"),
                    "MCP servers listen on unprivileged ports; remove NET_BIND_SERVICE",
                );
            }
        }
        for (pi, port) in c.container.ports.as_deref().unwrap_or_default().iter().enumerate() {
            if port.host_port.is_some_and(|p| p != 0) {
                v.deny(
                    "pss.hostPorts",
                    format!("{}.ports[{pi}].hostPort", c.path),
                    "host ports are forbidden; expose the gateway through its Service",
                );
            }
        }
        if let Some(se) = sc.and_then(|s| s.se_linux_options.as_ref()) {
            selinux(&mut v, se, &format!("{scp}.seLinuxOptions"));
        }
        if sc.and_then(|s| s.app_armor_profile.as_ref()).is_some_and(|p| p.type_ == "Unconfined") {
            v.deny(
                "pss.appArmor",
                format!("{scp}.appArmorProfile.type"),
                "AppArmor must not be Unconfined",
            );
        }
        if sc.and_then(|s| s.proc_mount.as_deref()).is_some_and(|p| p != "Default") {
            v.deny("pss.procMount", format!("{scp}.procMount"), "procMount must be Default");
        }
        let seccomp =
            sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()).or(pod_seccomp);
        match seccomp {
            Some("RuntimeDefault") | Some("Localhost") => {}
            Some("Unconfined") => v.deny(
                "pss.seccomp",
                format!("{scp}.seccompProfile.type"),
                "seccomp must not be Unconfined; use RuntimeDefault",
            ),
            _ => v.deny(
                "pss.seccomp",
                format!("{scp}.seccompProfile"),
                format!(
                    "container {} needs seccompProfile RuntimeDefault (here or on the pod)",
                    c.name
                ),
            ),
        }
        if sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            v.deny(
                "pss.privilegeEscalation",
                format!("{scp}.allowPrivilegeEscalation"),
                format!("container {} must set allowPrivilegeEscalation: false", c.name),
            );
        }
        if sc.and_then(|s| s.run_as_non_root).or(pod_non_root) != Some(true) {
            v.deny(
                "pss.runAsNonRoot",
                format!("{scp}.runAsNonRoot"),
                format!("container {} must run as non-root: set runAsNonRoot: true", c.name),
            );
        }
        if sc.and_then(|s| s.run_as_user) == Some(0) {
            v.deny("pss.runAsUser", format!("{scp}.runAsUser"), "running as UID 0 is forbidden");
        }
        if sc.and_then(|s| s.read_only_root_filesystem) != Some(true) {
            v.deny("hardening.readOnlyRootFilesystem", format!("{scp}.readOnlyRootFilesystem"), format!("container {} must have a read-only root filesystem; declare writable paths as scratch (tmpfs)", c.name));
        }
        let limits = c.container.resources.as_ref().and_then(|r| r.limits.as_ref());
        for res in ["cpu", "memory"] {
            if !limits.is_some_and(|l| l.contains_key(res)) {
                v.deny(
                    "hardening.resourceLimits",
                    format!("{}.resources.limits.{res}", c.path),
                    format!("container {} needs a {res} limit", c.name),
                );
            }
        }
    }
    v
}

fn selinux(v: &mut Verdict, se: &k8s_openapi::api::core::v1::SELinuxOptions, path: &str) {
    if !SELINUX_TYPES.contains(&se.type_.as_deref().unwrap_or_default()) {
        v.deny("pss.seLinux", format!("{path}.type"), "SELinux type must be one of container_t, container_init_t, container_kvm_t, container_engine_t");
    }
    if se.user.is_some() || se.role.is_some() {
        v.deny("pss.seLinux", path.to_string(), "SELinux user and role may not be set");
    }
}
