#!/usr/bin/env python3
"""Seeds for the fuzz targets of fuzz/ (e2e/fuzz): the official MCP examples of every revision
directory under SCHEMAS, the repository's example manifests, and inputs of the shapes the
proptest cases use. Written under OUT/<target>/, one file per seed; nothing is kept in the repo.
Usage: fuzz-seeds.py SCHEMAS REPO OUT"""
import hashlib
import json
import pathlib
import sys

import yaml

schemas, repo, out = (pathlib.Path(a) for a in sys.argv[1:4])
count = {}


def seed(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)
    count[target] = count.get(target, 0) + 1


examples = []
for f in sorted(schemas.glob("examples-*/*/*.json")):
    try:
        examples.append((f.parent.name, json.loads(f.read_text())))
    except ValueError:
        continue
if not examples:
    sys.exit(f"fuzz-seeds: no official examples under {schemas}")

for i, (name, ex) in enumerate(examples):
    text = json.dumps(ex)
    seed("envelope", text)
    if isinstance(ex, dict) and "jsonrpc" not in ex:
        seed("envelope", json.dumps({"jsonrpc": "2.0", "id": i, "method": name, "params": ex}))
        seed("envelope", json.dumps({"jsonrpc": "2.0", "id": f"r-{i}", "result": ex}))
    body = ex
    if isinstance(ex, dict):
        body = ex.get("params", ex.get("result", ex))
    for pick in (i % 256, (i * 7 + 3) % 256):
        seed("params", bytes([pick, i % 2]) + json.dumps(body).encode())
    event = f"event: message\nid: {i}\ndata: {text}\n\n"
    seed("sse", bytes([i % 256]) + event.encode())
    seed("sse", bytes([(i * 31) % 256]) + event.replace("\n", "\r\n").encode())

for s in [": keep-alive\n\n", "retry: 1000\n\n", "data: a\ndata: b\n\n", "data:x\r\rdata:y\n\n",
          "event: endpoint\ndata: /messages?session=1\n\n", "\ufeffdata: bom\n\n"]:
    seed("sse", b"\x80" + s.encode())

for s in ["get_weather", "tools/call", "file:///tmp/a b", "=?base64?bmHDr3Zl?=", "=?base64?x?=",
          " padded ", "na\u00efve", "=?base64??="]:
    seed("headers", s)

for s in ["/data/reports/q1.csv", "/srv/shared/a/b", "/data/../etc/passwd", "/data/%2e%2e/x",
          "/data/\uff0e\uff0e/x", "/data/CON.txt", "C:\\\\data", "/data/a\x00b",
          "https://example.com/a?b=c", "http://169.254.169.254/latest/meta-data/",
          "http://0x7f.1/", "http://[::ffff:10.0.0.1]/", "https://user:pw@example.com/",
          "https://internal.example/", "http://2130706433/", "https://ex\u0430mple.com/",
          "gopher://example.com/", "http://0177.0.0.1:8080/x", "https://example.com:8443/"]:
    seed("guards", s)

manifests = sorted(repo.glob("examples/**/*.yaml")) + sorted(repo.glob("e2e/nodes/*.yaml"))
kinds = {"MCPServer": "mcpservers", "MCPPolicy": "mcppolicies",
         "MCPVirtualServer": "mcpvirtualservers", "Deployment": "deployments", "Pod": "pods"}
for f in manifests:
    text = f.read_text()
    seed("admission_yaml", text)
    try:
        docs = [d for d in yaml.safe_load_all(text.replace("@", "x")) if isinstance(d, dict)]
    except yaml.YAMLError:
        continue
    for d in docs:
        kind = d.get("kind", "")
        group, _, version = d.get("apiVersion", "v1").rpartition("/")
        meta = d.get("metadata") or {}
        review = {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "00000000-0000-0000-0000-000000000001",
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version,
                             "resource": kinds.get(kind, kind.lower() + "s")},
                "name": meta.get("name", ""), "namespace": meta.get("namespace", "default"),
                "operation": "CREATE", "userInfo": {"username": "fuzz"}, "object": d,
            },
        }
        seed("admission_review", json.dumps(review))

for keep in range(0, 16):
    seed("audit_verify", bytes([keep]))
    seed("audit_verify", bytes([keep]) + b'{"seq":1,"kind":"call","prev":"0"}\n')

print(" ".join(f"{t}={n}" for t, n in sorted(count.items())), file=sys.stderr)
