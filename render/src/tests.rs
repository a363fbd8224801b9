use std::path::Path;

use k8s_openapi::api::core::v1::{Capabilities, HostPathVolumeSource, PodSpec, Volume};
use palisade_admission::rules::pss::{self, HARDENING_CONTROLS, RESTRICTED_CONTROLS};
use palisade_core::spec::{ToolEffect, ToolPolicy};
use palisade_crds::MCPServer;
use palisade_crds::mcpserver::{EgressPort, EgressRule, Peer, PortProtocol, Transport};

use super::*;

fn example(file: &str) -> MCPServer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut server: MCPServer = serde_saphyr::from_str(&text).unwrap();
    server.metadata.uid = Some("3f2a3f56-5a1e-4c8e-9a55-2f1d7c8f0a11".into());
    server
}

/// One server of each transport, from the committed examples.
fn servers() -> Vec<MCPServer> {
    let all: Vec<_> = ["filesystem-stdio.yaml", "everything-http.yaml", "weather-sse.yaml"]
        .iter()
        .map(|f| example(f))
        .collect();
    let transports: Vec<_> = all.iter().map(|s| s.spec.transport).collect();
    assert_eq!(transports, vec![Transport::Stdio, Transport::StreamableHttp, Transport::Sse]);
    all
}

fn pod(r: &Rendered) -> PodSpec {
    r.deployment.spec.as_ref().unwrap().template.spec.clone().unwrap()
}

fn violations_of(spec: &PodSpec) -> Vec<&'static str> {
    pss::check_pod_spec(spec, None, "spec").violations.iter().map(|v| v.rule).collect()
}

#[test]
fn rendered_pods_pass_the_restricted_profile_for_every_transport() {
    for server in servers() {
        let r = render(&server, &RenderOptions::default()).unwrap();
        let verdict = pss::check_pod_spec(&pod(&r), None, "spec");
        assert!(verdict.allowed(), "{:?}: {}", server.spec.transport, verdict.message());
    }
}

/// Every control of the profile is checked: breaking it on rendered output is detected, so a
/// clean verdict above means each control holds.
#[test]
fn each_restricted_control_is_enforced_on_rendered_output() {
    type Breaker = fn(&mut PodSpec);
    let breakers: Vec<(&str, Breaker)> = vec![
        ("pss.hostProcess", |p| {
            let sc = p.security_context.get_or_insert_with(Default::default);
            sc.windows_options = Some(k8s_openapi::api::core::v1::WindowsSecurityContextOptions {
                host_process: Some(true),
                ..Default::default()
            });
        }),
        ("pss.hostNamespaces", |p| p.host_network = Some(true)),
        ("pss.privileged", |p| {
            p.containers[0].security_context.as_mut().unwrap().privileged = Some(true)
        }),
        ("pss.capabilities", |p| {
            p.containers[1].security_context.as_mut().unwrap().capabilities =
                Some(Capabilities { add: Some(vec!["SYS_ADMIN".into()]), drop: None })
        }),
        ("pss.hostPathVolumes", |p| {
            p.volumes.get_or_insert_with(Vec::new).push(Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource { path: "/".into(), type_: None }),
                ..Default::default()
            })
        }),
        ("pss.hostPorts", |p| p.containers[1].ports.as_mut().unwrap()[0].host_port = Some(8443)),
        ("pss.appArmor", |p| {
            p.containers[0].security_context.as_mut().unwrap().app_armor_profile =
                Some(k8s_openapi::api::core::v1::AppArmorProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                })
        }),
        ("pss.seLinux", |p| {
            p.containers[0].security_context.as_mut().unwrap().se_linux_options =
                Some(k8s_openapi::api::core::v1::SELinuxOptions {
                    type_: Some("spc_t".into()),
                    ..Default::default()
                })
        }),
        ("pss.procMount", |p| {
            p.containers[0].security_context.as_mut().unwrap().proc_mount = Some("Unmasked".into())
        }),
        ("pss.seccomp", |p| {
            p.security_context.as_mut().unwrap().seccomp_profile = None;
            p.containers[0].security_context.as_mut().unwrap().seccomp_profile = None;
        }),
        ("pss.sysctls", |p| {
            p.security_context.as_mut().unwrap().sysctls =
                Some(vec![k8s_openapi::api::core::v1::Sysctl {
                    name: "kernel.core_pattern".into(),
                    value: "|/x".into(),
                }])
        }),
        ("pss.volumeTypes", |p| {
            p.volumes.get_or_insert_with(Vec::new).push(Volume {
                name: "nfs".into(),
                nfs: Some(k8s_openapi::api::core::v1::NFSVolumeSource {
                    path: "/".into(),
                    server: "nfs".into(),
                    read_only: None,
                }),
                ..Default::default()
            })
        }),
        ("pss.privilegeEscalation", |p| {
            p.containers[1].security_context.as_mut().unwrap().allow_privilege_escalation = None
        }),
        ("pss.runAsNonRoot", |p| {
            p.security_context.as_mut().unwrap().run_as_non_root = None;
            p.containers[0].security_context.as_mut().unwrap().run_as_non_root = Some(false);
        }),
        ("pss.runAsUser", |p| {
            p.containers[0].security_context.as_mut().unwrap().run_as_user = Some(0)
        }),
        ("hardening.readOnlyRootFilesystem", |p| {
            p.containers[0].security_context.as_mut().unwrap().read_only_root_filesystem =
                Some(false)
        }),
        ("hardening.serviceAccountToken", |p| p.automount_service_account_token = None),
        ("hardening.resourceLimits", |p| p.containers[0].resources.as_mut().unwrap().limits = None),
        ("hardening.noAddedCapabilities", |p| {
            p.containers[0].security_context.as_mut().unwrap().capabilities = Some(Capabilities {
                add: Some(vec!["NET_BIND_SERVICE".into()]),
                drop: Some(vec!["ALL".into()]),
            })
        }),
    ];
    let covered: Vec<&str> = breakers.iter().map(|(c, _)| *c).collect();
    for control in RESTRICTED_CONTROLS.iter().chain(HARDENING_CONTROLS) {
        assert!(covered.contains(control), "no test breaks {control}");
    }
    for server in servers() {
        let clean = pod(&render(&server, &RenderOptions::default()).unwrap());
        for (control, brk) in &breakers {
            let mut broken = clean.clone();
            brk(&mut broken);
            assert!(
                violations_of(&broken).contains(control),
                "{:?}: breaking {control} went unnoticed",
                server.spec.transport
            );
        }
    }
}

#[test]
fn containers_are_hardened_and_only_the_gateway_is_exposed() {
    for server in servers() {
        let r = render(&server, &RenderOptions::default()).unwrap();
        let p = pod(&r);
        assert_eq!(r.service_account.automount_service_account_token, Some(false));
        assert_eq!(p.automount_service_account_token, Some(false));
        assert_eq!(p.enable_service_links, Some(false));
        let all = p.init_containers.iter().flatten().chain(p.containers.iter());
        for c in all {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            assert_eq!(sc.capabilities.as_ref().unwrap().drop, Some(vec!["ALL".to_string()]));
            assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
            assert!(c.image.as_ref().unwrap().contains("@sha256:"), "{} not by digest", c.name);
        }
        let server_c = p.containers.iter().find(|c| c.name == "server").unwrap();
        assert!(server_c.ports.is_none(), "the server container must not declare ports");
        assert_eq!(server_c.image.as_deref(), r.image.as_deref());
        let svc_ports = r.service.spec.as_ref().unwrap().ports.clone().unwrap();
        assert_eq!(svc_ports.len(), 1);
        assert_eq!(svc_ports[0].port, GATEWAY_PORT);
        // Gateway state is per replica: a client must keep reaching the same one.
        let svc = r.service.spec.as_ref().unwrap();
        assert_eq!(svc.session_affinity.as_deref(), Some("ClientIP"));
        // Every writable volume is a size-limited tmpfs.
        for v in p.volumes.iter().flatten() {
            if let Some(ed) = &v.empty_dir {
                assert_eq!(ed.medium.as_deref(), Some("Memory"), "{}", v.name);
                assert!(ed.size_limit.is_some(), "{}", v.name);
            }
        }
        let scratch = &server.spec.scratch;
        let mounts = server_c.volume_mounts.clone().unwrap();
        for s in scratch {
            let m = mounts.iter().find(|m| m.mount_path == s.path).unwrap();
            assert_eq!(m.read_only, Some(false));
        }
        assert!(mounts.iter().filter(|m| m.read_only == Some(false)).all(|m| {
            scratch.iter().any(|s| s.path == m.mount_path) || m.mount_path == "/palisade/run"
        }));
    }
}

#[test]
fn stdio_servers_are_wrapped_by_the_bridge_without_a_shell() {
    let server = example("filesystem-stdio.yaml");
    let r = render(&server, &RenderOptions::default()).unwrap();
    let p = pod(&r);
    let init = p.init_containers.as_ref().unwrap();
    assert_eq!(init[0].name, "install-bridge");
    let cmd = p.containers[0].command.clone().unwrap();
    assert_eq!(cmd[0], BRIDGE_BINARY);
    assert_eq!(cmd[1], "bridge");
    let dashdash = cmd.iter().position(|a| a == "--").unwrap();
    assert_eq!(&cmd[dashdash + 1..], server.spec.command.as_slice());
    assert!(!cmd.iter().any(|a| a == "sh" || a == "-c" || a == "/bin/sh"));
    let allow = cmd.iter().find(|a| a.starts_with("--env-allow=")).unwrap();
    assert!(allow.contains("PATH") && allow.contains("HOME"));
    assert!(!allow.contains("KUBERNETES_SERVICE_HOST"));
    match &r.gateway_config.upstream {
        palisade_core::config::Upstream::Stdio { socket, .. } => assert_eq!(socket, BRIDGE_SOCKET),
        other => panic!("stdio server got upstream {other:?}"),
    }
}

#[test]
fn http_servers_are_reached_on_loopback() {
    let server = example("everything-http.yaml");
    let r = render(&server, &RenderOptions::default()).unwrap();
    assert_eq!(
        r.gateway_config.upstream,
        palisade_core::config::Upstream::Http {
            url: "http://127.0.0.1:3001/mcp".into(),
            sse: false,
            ca_file: None
        }
    );
    let sse = render(&example("weather-sse.yaml"), &RenderOptions::default()).unwrap();
    assert_eq!(
        sse.gateway_config.upstream,
        palisade_core::config::Upstream::Http {
            url: "http://127.0.0.1:8000/sse".into(),
            sse: true,
            ca_file: None
        }
    );
    assert!(r.pod_disruption_budget.is_some(), "2 replicas get a PDB");
    assert!(sse.pod_disruption_budget.is_none(), "1 replica gets none");
}

#[test]
fn every_object_is_owned_and_labelled() {
    for server in servers() {
        let r = render(&server, &RenderOptions::default()).unwrap();
        for obj in r.objects().unwrap() {
            let meta = &obj["metadata"];
            let owner = &meta["ownerReferences"][0];
            assert_eq!(owner["kind"], "MCPServer", "{}", obj["kind"]);
            assert_eq!(owner["uid"], server.metadata.uid.clone().unwrap());
            assert_eq!(owner["controller"], true);
            assert_eq!(meta["labels"]["app.kubernetes.io/managed-by"], "palisade");
            assert_eq!(
                meta["labels"][palisade_crds::MCP_SERVER_LABEL],
                server.metadata.name.clone().unwrap()
            );
            assert!(obj["apiVersion"].is_string() && obj["kind"].is_string());
        }
    }
}

fn egress_server(cidrs: &[&str]) -> MCPServer {
    let mut s = example("everything-http.yaml");
    s.spec.egress = cidrs
        .iter()
        .map(|c| EgressRule {
            cidr: Some(c.to_string()),
            host: None,
            ports: vec![EgressPort { port: 443, end_port: None, protocol: PortProtocol::Tcp }],
        })
        .collect();
    s
}

fn egress_blocks(r: &Rendered) -> Vec<(String, Vec<String>)> {
    let egress = r
        .network_policies
        .iter()
        .find(|n| n.metadata.name.as_deref().unwrap().ends_with("-egress"))
        .unwrap();
    egress
        .spec
        .as_ref()
        .unwrap()
        .egress
        .clone()
        .unwrap()
        .iter()
        .filter_map(|rule| {
            let b = rule.to.as_ref()?.first()?.ip_block.clone()?;
            Some((b.cidr, b.except.unwrap_or_default()))
        })
        .collect()
}

#[test]
fn network_policies_deny_by_default_and_exclude_metadata_everywhere() {
    let r = render(
        &egress_server(&["0.0.0.0/0", "::/0", "10.0.0.0/8", "169.254.0.0/15"]),
        &RenderOptions::default(),
    );
    // 169.254.0.0/15 contains 169.254.0.0/16: allowed with the exception carved out.
    let r = r.unwrap();
    let names: Vec<_> =
        r.network_policies.iter().map(|n| n.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, vec!["everything-default-deny", "everything-ingress", "everything-egress"]);
    let deny = r.network_policies[0].spec.clone().unwrap();
    assert_eq!(deny.policy_types, Some(vec!["Ingress".to_string(), "Egress".to_string()]));
    assert!(deny.ingress.is_none() && deny.egress.is_none());

    let blocks = egress_blocks(&r);
    let except_of = |cidr: &str| blocks.iter().find(|(c, _)| c == cidr).unwrap().1.clone();
    let v4 = except_of("0.0.0.0/0");
    for m in ["169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32", "192.0.0.192/32"] {
        assert!(v4.contains(&m.to_string()), "0.0.0.0/0 does not exclude {m}: {v4:?}");
    }
    let v6 = except_of("::/0");
    for m in ["fe80::/10", "fd00:ec2::254/128", "fd20:ce::254/128"] {
        assert!(v6.contains(&m.to_string()), "::/0 does not exclude {m}: {v6:?}");
    }
    assert!(except_of("10.0.0.0/8").is_empty());
    assert_eq!(except_of("169.254.0.0/15"), vec!["169.254.0.0/16".to_string()]);

    // Egress allows DNS to cluster DNS and nothing implicit: every rule names ports.
    let egress = r.network_policies[2].spec.clone().unwrap().egress.unwrap();
    let dns = &egress[0];
    assert_eq!(
        dns.ports.as_ref().unwrap().iter().map(|p| p.port.clone()).collect::<Vec<_>>().len(),
        2
    );
    assert!(egress.iter().all(|rule| rule.ports.as_ref().is_some_and(|p| !p.is_empty())));
    assert!(egress.iter().all(|rule| rule.to.as_ref().is_some_and(|t| !t.is_empty())));
}

#[test]
fn cidrs_inside_metadata_ranges_are_refused() {
    for bad in ["169.254.169.254/32", "169.254.0.0/16", "fd00:ec2::254/128"] {
        let err = render(&egress_server(&[bad]), &RenderOptions::default()).unwrap_err();
        assert!(matches!(err, RenderError::BadEgress { index: 0, .. }), "{bad}: {err}");
    }
}

#[test]
fn ingress_allows_only_the_gateway_port_and_only_from_declared_peers() {
    let mut s = example("everything-http.yaml");
    let r = render(&s, &RenderOptions::default()).unwrap();
    let ingress = r.network_policies[1].spec.clone().unwrap().ingress.unwrap();
    assert_eq!(ingress.len(), 2);
    assert_eq!(ingress[0].from.as_ref().unwrap().len(), 2, "the agents and the virtual server");
    let port = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        rule.ports.as_ref().unwrap()[0].port.clone().unwrap()
    };
    assert_eq!(
        port(&ingress[0]),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(GATEWAY_PORT)
    );
    assert_eq!(
        port(&ingress[1]),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(ADMIN_PORT)
    );

    // The cluster's Prometheus, when named, reaches the admin port (metrics) and nothing else.
    let opts = RenderOptions { metrics_namespace: Some("monitoring".into()), ..Default::default() };
    let with_metrics = render(&s, &opts).unwrap();
    let rules = with_metrics.network_policies[1].spec.clone().unwrap().ingress.unwrap();
    assert_eq!(rules.len(), 3);
    let metrics_rule = &rules[2];
    assert_eq!(
        port(metrics_rule),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(ADMIN_PORT)
    );
    let peer = &metrics_rule.from.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
        "monitoring"
    );
    assert_eq!(metrics_rule.ports.as_ref().unwrap().len(), 1);

    // No peers: no rule for the gateway port at all (an empty `from` would allow everyone).
    s.spec.ingress.clear();
    let r = render(&s, &RenderOptions::default()).unwrap();
    let ingress = r.network_policies[1].spec.clone().unwrap().ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    assert!(ingress.iter().all(|rule| rule.from.as_ref().is_some_and(|f| !f.is_empty())));

    s.spec.ingress = vec![Peer { cidr: Some("0.0.0.0/0".into()), ..Default::default() }];
    let r = render(&s, &RenderOptions::default()).unwrap();
    let ingress = r.network_policies[1].spec.clone().unwrap().ingress.unwrap();
    let block = ingress[0].from.as_ref().unwrap()[0].ip_block.clone().unwrap();
    assert!(block.except.unwrap().contains(&"169.254.0.0/16".to_string()));
}

#[test]
fn the_shared_store_is_reachable_on_its_port_only() {
    let mut server = example("everything-http.yaml");
    let without = render(&server, &RenderOptions::default()).unwrap();
    server.spec.gateway.state = Some(
        serde_json::from_value(serde_json::json!({
            "url": "redis://redis.store.svc:6379",
            "passwordSecretRef": {"name": "redis-auth", "key": "password"},
            "peer": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "store"}},
                     "podSelector": {"matchLabels": {"app": "redis"}}}}))
        .unwrap(),
    );
    let with = render(&server, &RenderOptions::default()).unwrap();
    let egress = |r: &Rendered| {
        let p = r
            .network_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("everything-egress"))
            .unwrap();
        p.spec.as_ref().unwrap().egress.clone().unwrap()
    };
    let (before, after) = (egress(&without), egress(&with));
    assert_eq!(after.len(), before.len() + 1);
    let added = after.iter().find(|r| !before.contains(r)).unwrap();
    let serde_json::Value::Object(rule) = serde_json::to_value(added).unwrap() else { panic!() };
    assert_eq!(
        serde_json::Value::Object(rule),
        serde_json::json!({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "store"}},
                    "podSelector": {"matchLabels": {"app": "redis"}}}],
            "ports": [{"port": 6379, "protocol": "TCP"}]
        })
    );
    // A URL without a port cannot be rendered into a rule.
    server.spec.gateway.state.as_mut().unwrap().url = "redis://redis.store.svc".into();
    assert!(matches!(
        render(&server, &RenderOptions::default()),
        Err(RenderError::BadStateStore(_))
    ));
}

#[test]
fn config_hash_follows_the_gateway_policy_only() {
    let s = example("everything-http.yaml");
    let base = render(&s, &RenderOptions::default()).unwrap();
    let mut replicas = s.clone();
    replicas.spec.replicas = 3;
    assert_eq!(render(&replicas, &RenderOptions::default()).unwrap().config_hash, base.config_hash);
    let mut tools = s.clone();
    tools.spec.tools.push(ToolPolicy {
        name: "longRunningOperation".into(),
        effect: ToolEffect::Read,
        require_approval: None,
        dry_run: None,
        arguments: vec![],
        deny_unlisted_arguments: false,
        rate_per_minute: None,
        pin: None,
    });
    let changed = render(&tools, &RenderOptions::default()).unwrap();
    assert_ne!(changed.config_hash, base.config_hash);
    let annotation = |r: &Rendered| {
        r.deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_eq!(annotation(&changed), changed.config_hash);
    assert_eq!(
        changed.config_hash,
        sha256_hex(
            changed.config_map.data.as_ref().unwrap()[palisade_core::config::FILE_NAME].as_bytes()
        )
    );
}

#[test]
fn images_must_be_pinned() {
    let mut s = example("everything-http.yaml");
    s.spec.image = Some("docker.io/mcp/everything:1.0.0".into());
    assert!(matches!(render(&s, &RenderOptions::default()), Err(RenderError::ImageNotPinned(_))));
    let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let opts = RenderOptions { resolved_digest: Some(digest.into()), ..RenderOptions::default() };
    let r = render(&s, &opts).unwrap();
    assert_eq!(r.image, Some(format!("docker.io/mcp/everything:1.0.0@{digest}")));
    let opts = RenderOptions {
        gateway_image: "ghcr.io/palisade-dev/gateway:0.1".into(),
        ..RenderOptions::default()
    };
    assert!(matches!(
        render(&example("everything-http.yaml"), &opts),
        Err(RenderError::GatewayImageNotPinned(_))
    ));
}

#[test]
fn cilium_policy_expresses_host_rules() {
    let s = example("weather-sse.yaml");
    let opts = RenderOptions { fqdn_policy: FqdnPolicy::Cilium, ..RenderOptions::default() };
    let r = render(&s, &opts).unwrap();
    let cnp = r.cilium_policy.unwrap();
    assert_eq!(cnp["kind"], "CiliumNetworkPolicy");
    let names: Vec<_> = cnp["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["toFQDNs"][0]["matchName"].as_str())
        .collect();
    assert_eq!(names, vec!["api.weather.gov", "login.example.com"]);
    let annotations = r.deployment.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations[EGRESS_HOSTS_ANNOTATION], "api.weather.gov:443,login.example.com:443");
    assert!(render(&s, &RenderOptions::default()).unwrap().cilium_policy.is_none());
}

/// Hole 12 of the audit: DNS was open to any name. Where the CNI can (Cilium), it is limited
/// to the names the spec needs, and the NetworkPolicy no longer opens port 53 beside it.
#[test]
fn dns_is_limited_to_the_names_the_spec_needs_under_cilium() {
    let s = example("weather-sse.yaml");
    let port_53 = |r: &Rendered| {
        r.network_policies.iter().any(|np| {
            np.spec.as_ref().and_then(|s| s.egress.as_ref()).is_some_and(|rules| {
                rules.iter().any(|rule| {
                    rule.ports.iter().flatten().any(|p| {
                        p.port
                            == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                                53,
                            ))
                    })
                })
            })
        })
    };
    // Without an FQDN-capable CNI, DNS stays open (documented as residual risk).
    assert!(port_53(&render(&s, &RenderOptions::default()).unwrap()));
    let opts = RenderOptions { fqdn_policy: FqdnPolicy::Cilium, ..RenderOptions::default() };
    let r = render(&s, &opts).unwrap();
    assert!(!port_53(&r), "an open DNS rule would let any name through");
    let cnp = r.cilium_policy.unwrap();
    let dns: Vec<_> = cnp["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["toPorts"][0]["rules"]["dns"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(!dns.is_empty());
    assert!(!dns.iter().any(|d| d["matchPattern"] == "*"), "{dns:?}");
    let mut names: Vec<_> = dns.iter().filter_map(|d| d["matchName"].as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["api.weather.gov", "login.example.com"]);
    // A server that needs no names gets no DNS at all.
    let mut quiet = example("filesystem-stdio.yaml");
    quiet.spec.egress.clear();
    quiet.spec.auth.oidc = None;
    let cnp = render(&quiet, &opts).unwrap().cilium_policy.unwrap();
    assert!(!cnp.to_string().contains("\"53\""), "{cnp}");
}

/// Hole 5 and 2 of the audit: the gateway runs under its own UID, the sandbox's lifetime
/// limit reaches the bridge, and the server's Secret mounts are off limits to tool arguments.
#[test]
fn the_gateway_has_its_own_uid_and_the_bridge_its_limits() {
    let mut s = example("filesystem-stdio.yaml");
    s.spec.sandbox.max_lifetime_seconds = Some(3600);
    s.spec.secret_mounts = vec![
        serde_json::from_value(serde_json::json!({"secretName": "keys", "mountPath": "/var/keys"}))
            .unwrap(),
    ];
    let r = render(&s, &RenderOptions::default()).unwrap();
    let pod = r.deployment.spec.unwrap().template.spec.unwrap();
    let uid_of = |name: &str| {
        pod.containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.security_context.as_ref())
            .and_then(|sc| sc.run_as_user)
    };
    assert_eq!(uid_of("gateway"), Some(palisade_crds::GATEWAY_UID));
    assert_ne!(uid_of("server"), uid_of("gateway"));
    let server = pod.containers.iter().find(|c| c.name == "server").unwrap();
    let argv = server.command.clone().unwrap();
    let dashdash = argv.iter().position(|a| a == "--").unwrap();
    assert!(argv[..dashdash].contains(&"--max-lifetime=3600".to_string()), "{argv:?}");
    assert_eq!(r.gateway_config.protected_paths, vec!["/var/keys".to_string()]);
    assert!(r.gateway_config.audit.head_file.is_some());
}

#[test]
fn secret_references_become_read_only_files_the_gateway_config_names() {
    let mut server = example("everything-http.yaml");
    server.spec.auth.oidc_ca_secret_ref = Some(
        serde_json::from_value(serde_json::json!({"name": "idp-ca", "key": "ca.pem"})).unwrap(),
    );
    server.spec.audit.signing_key_secret_ref = Some(
        serde_json::from_value(serde_json::json!({"name": "audit", "key": "ed25519.pem"})).unwrap(),
    );
    server.spec.gateway.state = Some(
        serde_json::from_value(serde_json::json!({
            "url": "rediss://palisade@redis.store.svc:6380",
            "passwordSecretRef": {"name": "redis-auth", "key": "password"},
            "caSecretRef": {"name": "redis-ca", "key": "ca.crt"},
            "peer": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "store"}}}}))
        .unwrap(),
    );
    let r = render(&server, &RenderOptions::default()).unwrap();
    let cfg = &r.gateway_config;
    let p = pod(&r);
    let gateway = p.containers.iter().find(|c| c.name == "gateway").unwrap();
    let mounts = gateway.volume_mounts.clone().unwrap_or_default();
    let volumes = p.volumes.clone().unwrap_or_default();
    let mut files = vec![cfg.auth.oidc_ca_file.clone().unwrap()];
    files.extend(cfg.auth.mtls.as_ref().map(|m| m.client_ca_file.clone()));
    files.extend(cfg.audit.signing_key_file.clone());
    let store = cfg.state.as_ref().unwrap();
    files.extend(store.password_file.clone());
    files.extend(store.ca_file.clone());
    assert_eq!(files.len(), 5, "{files:?}");
    // Each server's keys apart from every other's in a store they share.
    assert_eq!(store.key_prefix, "palisade:mcp-demo/everything:");
    assert_eq!(store.url, "rediss://palisade@redis.store.svc:6380");
    for file in files {
        // The deepest mount holding the file is the one that serves it.
        let m = mounts
            .iter()
            .filter(|m| file.starts_with(&format!("{}/", m.mount_path)))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("{file} is not under a gateway mount"));
        assert_eq!(m.read_only, Some(true), "{file}");
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        let secret = v.secret.as_ref().unwrap_or_else(|| panic!("{file} is not from a Secret"));
        let key = file.rsplit('/').next().unwrap();
        assert!(
            secret.items.as_ref().unwrap().iter().any(|i| i.key == key && i.path == key),
            "{file}"
        );
        // No other container sees it.
        for c in p.containers.iter().filter(|c| c.name != "gateway") {
            assert!(
                c.volume_mounts.iter().flatten().all(|cm| cm.name != m.name),
                "{file} in {}",
                c.name
            );
        }
    }
    assert_eq!(
        server.spec.auth.oidc_ca_secret_ref.as_ref().map(|r| r.name.as_str()),
        Some("idp-ca")
    );
}

#[test]
fn upstream_credentials_become_files_only_the_gateway_reads() {
    use palisade_core::config::UpstreamAuthConfig;
    let mut server = example("everything-http.yaml");
    server.spec.upstream_auth = Some(
        serde_json::from_value(serde_json::json!({"tokenExchange": {
            "tokenEndpoint": "https://idp.example/token", "clientId": "gateway",
            "clientSecretRef": {"name": "exchange", "key": "secret"},
            "caSecretRef": {"name": "idp-ca", "key": "ca.pem"},
            "audience": "https://api.example", "scopes": ["read"]}}))
        .unwrap(),
    );
    let r = render(&server, &RenderOptions::default()).unwrap();
    let Some(UpstreamAuthConfig::TokenExchange(t)) = &r.gateway_config.upstream_auth else {
        panic!("{:?}", r.gateway_config.upstream_auth)
    };
    assert_eq!(t.client_secret_file, "/etc/palisade/upstream/secret");
    assert_eq!(t.ca_file.as_deref(), Some("/etc/palisade/upstream-ca/ca.pem"));
    assert_eq!(t.audience.as_deref(), Some("https://api.example"));
    let p = pod(&r);
    let mounted = |c: &str, volume: &str| {
        p.containers
            .iter()
            .find(|x| x.name == c)
            .and_then(|x| x.volume_mounts.clone())
            .unwrap_or_default()
            .iter()
            .any(|m| m.name == volume && m.read_only == Some(true))
    };
    assert!(mounted("gateway", "upstream-secret") && mounted("gateway", "upstream-ca"));
    assert!(!mounted("server", "upstream-secret") && !mounted("server", "upstream-ca"));

    server.spec.upstream_auth = Some(
        serde_json::from_value(
            serde_json::json!({"header": {"secretRef": {"name": "api", "key": "token"}}}),
        )
        .unwrap(),
    );
    let r = render(&server, &RenderOptions::default()).unwrap();
    assert_eq!(
        r.gateway_config.upstream_auth,
        Some(UpstreamAuthConfig::Header {
            name: "Authorization".into(),
            prefix: "Bearer ".into(),
            value_file: "/etc/palisade/upstream/token".into(),
        })
    );
}

#[test]
fn trace_export_names_the_collector_and_opens_only_its_port() {
    let s = example("everything-http.yaml");
    let base = render(&s, &RenderOptions::default()).unwrap();
    assert!(base.gateway_config.tracing.is_none());
    let opts = RenderOptions {
        tracing: Some(crate::TraceExport {
            otlp_endpoint: "http://otel.observability:4318".into(),
            namespace: "observability".into(),
            port: 4318,
            sample_ratio: 0.25,
        }),
        ..RenderOptions::default()
    };
    let r = render(&s, &opts).unwrap();
    let t = r.gateway_config.tracing.as_ref().unwrap();
    assert_eq!(
        (t.otlp_endpoint.as_str(), t.sample_ratio),
        ("http://otel.observability:4318", 0.25)
    );
    let egress = |r: &Rendered| r.network_policies[2].spec.clone().unwrap().egress.unwrap();
    let added: Vec<_> =
        egress(&r).into_iter().filter(|rule| !egress(&base).contains(rule)).collect();
    assert_eq!(added.len(), 1, "{added:?}");
    let rule = &added[0];
    assert_eq!(
        rule.ports.as_ref().unwrap()[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(4318))
    );
    assert_eq!(rule.ports.as_ref().unwrap().len(), 1);
    let peer = &rule.to.as_ref().unwrap()[0];
    assert!(peer.ip_block.is_none());
    assert_eq!(
        peer.namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
        "observability"
    );
    // A different config: the pods roll when the collector changes.
    assert_ne!(r.config_hash, base.config_hash);
}

#[test]
fn a_remote_server_is_its_gateway_alone_with_egress_to_the_remote_port() {
    let server = example("remote-https.yaml");
    let r = render(&server, &RenderOptions::default()).unwrap();
    assert_eq!(r.image, None, "no server image");
    let p = pod(&r);
    let names: Vec<_> = p.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["gateway"], "the gateway is the whole pod");
    assert!(p.init_containers.is_none(), "no bridge to install");
    let verdict = pss::check_pod_spec(&p, None, "spec");
    assert!(verdict.allowed(), "{}", verdict.message());
    // The upstream is the remote URL, trusting the mounted CA.
    assert_eq!(
        r.gateway_config.upstream,
        palisade_core::config::Upstream::Http {
            url: "https://mcp.tickets.example.com/mcp".into(),
            sse: false,
            ca_file: Some("/etc/palisade/remote-ca/ca.crt".into()),
        }
    );
    let gw = &p.containers[0];
    let mounts: Vec<_> =
        gw.volume_mounts.as_ref().unwrap().iter().map(|m| m.mount_path.as_str()).collect();
    assert!(mounts.contains(&"/etc/palisade/remote-ca"), "{mounts:?}");
    // Egress: the peer's CIDR on the URL's port, and nothing for a server container.
    let blocks = egress_blocks(&r);
    assert!(blocks.contains(&("203.0.113.16/28".to_string(), vec![])), "{blocks:?}");
    let egress = r.network_policies[2].spec.clone().unwrap().egress.unwrap();
    let to_remote = egress
        .iter()
        .find(|e| {
            e.to.as_ref().and_then(|t| t[0].ip_block.as_ref()).map(|b| b.cidr.as_str())
                == Some("203.0.113.16/28")
        })
        .unwrap();
    let ports = to_remote.ports.as_ref().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(
        ports[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(443))
    );

    // At an address: that address alone; at a metadata address: no render at all.
    let mut at_ip = server.clone();
    let remote = at_ip.spec.remote.as_mut().unwrap();
    remote.url = "https://198.51.100.9:8443/mcp".into();
    remote.peer = None;
    let r = render(&at_ip, &RenderOptions::default()).unwrap();
    assert!(egress_blocks(&r).contains(&("198.51.100.9/32".to_string(), vec![])));
    at_ip.spec.remote.as_mut().unwrap().url = "https://169.254.169.254/mcp".into();
    assert!(matches!(
        render(&at_ip, &RenderOptions::default()),
        Err(RenderError::BadRemote(m)) if m.contains("always denied")
    ));

    // By DNS name without a peer: no ipBlock; the FQDN policy and the annotation name it.
    let mut by_name = server.clone();
    by_name.spec.remote.as_mut().unwrap().peer = None;
    let opts = RenderOptions { fqdn_policy: FqdnPolicy::Cilium, ..RenderOptions::default() };
    let r = render(&by_name, &opts).unwrap();
    assert!(!egress_blocks(&r).iter().any(|(c, _)| c.starts_with("203.0.113.16")));
    let cnp = serde_json::to_string(r.cilium_policy.as_ref().unwrap()).unwrap();
    assert!(cnp.contains("\"matchName\":\"mcp.tickets.example.com\""), "{cnp}");
    let annotations = r.deployment.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert!(
        annotations[EGRESS_HOSTS_ANNOTATION].contains("mcp.tickets.example.com:443"),
        "{annotations:?}"
    );
}

#[test]
fn a_spec_with_both_or_neither_of_image_and_remote_does_not_render() {
    let mut both = example("remote-https.yaml");
    both.spec.image = Some(example("everything-http.yaml").spec.image.unwrap());
    assert!(matches!(render(&both, &RenderOptions::default()), Err(RenderError::ImageOrRemote)));
    let mut neither = example("everything-http.yaml");
    neither.spec.image = None;
    assert!(matches!(render(&neither, &RenderOptions::default()), Err(RenderError::ImageOrRemote)));
}

fn virtual_server() -> palisade_crds::MCPVirtualServer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/virtual.yaml");
    let mut vs: palisade_crds::MCPVirtualServer =
        serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    vs.metadata.uid = Some("9a1c0b52-0d3e-4f57-8d8a-2b3c4d5e6f70".into());
    vs
}

#[test]
fn a_virtual_server_is_a_gateway_over_its_servers_gateways() {
    let vs = virtual_server();
    let members = vec![example("remote-https.yaml"), example("everything-http.yaml")];
    let r = render_virtual(&vs, &members, &RenderOptions::default()).unwrap();
    let p = pod(&r);
    assert_eq!(p.containers.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["gateway"]);
    assert!(pss::check_pod_spec(&p, None, "spec").allowed());
    // Owned by the virtual server; labelled as one (never as an MCPServer's pods).
    let owner = &r.deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("MCPVirtualServer", "support"));
    let labels = r.deployment.metadata.labels.clone().unwrap();
    assert_eq!(
        labels.get(palisade_crds::VIRTUAL_SERVER_LABEL).map(String::as_str),
        Some("support")
    );
    assert!(!labels.contains_key(palisade_crds::MCP_SERVER_LABEL));
    // The upstream: each server's gateway by its Service, Palisade's CA, a token for its
    // audience; no gateway-wide upstream credential.
    let palisade_core::config::Upstream::Virtual { members: m, naming } =
        &r.gateway_config.upstream
    else {
        panic!("{:?}", r.gateway_config.upstream)
    };
    assert_eq!(naming.prefix, palisade_core::spec::PrefixMode::Always);
    let names: Vec<_> = m.iter().map(|x| (x.name.as_str(), x.prefix.as_str())).collect();
    assert_eq!(names, [("everything", "everything"), ("tickets", "tickets")], "sorted by name");
    assert_eq!(m[0].url, "https://everything.mcp-demo.svc.cluster.local:8443/mcp");
    assert_eq!(m[0].ca_file.as_deref(), Some("/etc/palisade/tls/ca.crt"));
    let Some(palisade_core::config::UpstreamAuthConfig::TokenExchange(x)) = &m[1].upstream_auth
    else {
        panic!("{:?}", m[1].upstream_auth)
    };
    assert_eq!(x.audience.as_deref(), Some("https://mcp.example.com/tickets"));
    assert_eq!(x.client_secret_file, "/etc/palisade/upstream/client-secret");
    assert!(r.gateway_config.upstream_auth.is_none());
    // Egress: the servers' pods on the gateway port.
    let egress = r.network_policies[2].spec.clone().unwrap().egress.unwrap();
    let to_servers = egress
        .iter()
        .find_map(|e| {
            let sel = e.to.as_ref()?[0].pod_selector.as_ref()?.match_expressions.as_ref()?;
            Some((sel[0].clone(), e.ports.clone().unwrap()))
        })
        .unwrap();
    assert_eq!(to_servers.0.key, palisade_crds::MCP_SERVER_LABEL);
    assert_eq!(to_servers.0.values, Some(vec!["everything".to_string(), "tickets".to_string()]));
    assert_eq!(
        to_servers.1[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8443))
    );
    // No servers, or one without OIDC: nothing rendered.
    assert!(matches!(
        render_virtual(&vs, &[], &RenderOptions::default()),
        Err(RenderError::BadMember(_))
    ));
    let mut no_oidc = example("everything-http.yaml");
    no_oidc.spec.auth.oidc = None;
    assert!(matches!(
        render_virtual(&vs, &[no_oidc], &RenderOptions::default()),
        Err(RenderError::BadMember(m)) if m.contains("no OIDC")
    ));
}
