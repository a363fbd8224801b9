#!/usr/bin/env python3
"""Writes one deterministic image layer: /NAME, the nonroot user, a CA bundle and /tmp.

usage: images-layer.py EXE NAME EPOCH OUT.tar

Entries are sorted, owned by root, stamped with EPOCH and carry no user or group names, so the
same inputs always give the same bytes (and the same layer digest).
"""
import io
import sys
import tarfile

CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = b"root:x:0:\nnonroot:x:65532:\n"


def main():
    exe, name, epoch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(exe, "rb") as f:
        binary = f.read()
    ca = None
    for path in CA_BUNDLES:
        try:
            with open(path, "rb") as f:
                ca = f.read()
            break
        except OSError:
            continue
    if ca is None:
        sys.exit("no CA bundle found (install ca-certificates)")

    entries = [
        ("etc", None, 0o755),
        ("etc/group", GROUP, 0o644),
        ("etc/passwd", PASSWD, 0o644),
        ("etc/ssl", None, 0o755),
        ("etc/ssl/certs", None, 0o755),
        ("etc/ssl/certs/ca-certificates.crt", ca, 0o644),
        ("home", None, 0o755),
        ("home/nonroot", None, 0o700),
        ("tmp", None, 0o1777),
        # At the root: the operator renders `/palisade-gateway` for the sidecar and the
        # bridge's init container.
        (name, binary, 0o755),
    ]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path, data, mode in sorted(entries):
            info = tarfile.TarInfo(path)
            info.mtime = epoch
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path == "home/nonroot":
                info.uid = info.gid = 65532
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
