#!/usr/bin/env python3
"""Writes one deterministic image layer: /NAME, the nonroot user, a CA bundle and /tmp.

usage: images-layer.py EXE NAME EPOCH OUT.tar [SOURCE=PATH ...]
       images-layer.py --only EPOCH OUT.tar SOURCE=PATH ...   (a layer of the extras alone,
                                                              to stack on a shared one)

Each SOURCE=PATH adds a file, or a directory with everything under it (symlinks kept as links),
at PATH in the image (for an interpreter, its libraries and a server's packages); link:TARGET=PATH
adds a symbolic link at PATH to TARGET.

Entries are sorted, owned by root, stamped with EPOCH and carry no user or group names, so the
same inputs always give the same bytes (and the same layer digest).
"""
import io
import os
import sys
import tarfile

CA_BUNDLES = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = b"root:x:0:\nnonroot:x:65532:\n"


def main():
    if sys.argv[1] == "--only":
        epoch, out = int(sys.argv[2]), sys.argv[3]
        write(out, epoch, [], [arg.split("=", 1) for arg in sys.argv[4:]])
        return
    exe, name, epoch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    extras = [arg.split("=", 1) for arg in sys.argv[5:]]
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
    write(out, epoch, entries, extras)


def write(out, epoch, entries, extras):
    """Writes ENTRIES and EXTRAS (with their parent directories) to OUT, sorted and stamped."""
    links = {}
    for source, dest in extras:
        if source.startswith("link:"):
            links[dest.strip("/")] = source[len("link:"):]
        else:
            add_tree(entries, links, source, dest.strip("/"))
    # Parent directories of the extras, once each.
    have = {path for path, _, _ in entries} | set(links)
    for path in list(have):
        parent = os.path.dirname(path)
        while parent and parent not in have:
            entries.append((parent, None, 0o755))
            have.add(parent)
            parent = os.path.dirname(parent)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path, data, mode in sorted(entries + [(p, None, 0o777) for p in links], key=lambda e: e[0]):
            info = tarfile.TarInfo(path)
            info.mtime = epoch
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path == "home/nonroot":
                info.uid = info.gid = 65532
            if path in links:
                info.type = tarfile.SYMTYPE
                info.linkname = links[path]
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def add_tree(entries, links, source, dest):
    """Adds SOURCE at DEST: a file (symlinks followed), or a directory walked in sorted order."""
    if not os.path.isdir(source):
        with open(source, "rb") as f:
            entries.append((dest, f.read(), 0o755 if os.access(source, os.X_OK) else 0o644))
        return
    entries.append((dest, None, 0o755))
    for root, dirs, files in os.walk(source):
        dirs.sort()
        rel = os.path.relpath(root, source)
        base = dest if rel == "." else f"{dest}/{rel}"
        for d in list(dirs):
            full = os.path.join(root, d)
            if os.path.islink(full):
                links[f"{base}/{d}"] = os.readlink(full)
                dirs.remove(d)
            else:
                entries.append((f"{base}/{d}", None, 0o755))
        for f in sorted(files):
            full = os.path.join(root, f)
            if os.path.islink(full):
                links[f"{base}/{f}"] = os.readlink(full)
                continue
            with open(full, "rb") as fh:
                mode = 0o755 if os.access(full, os.X_OK) else 0o644
                entries.append((f"{base}/{f}", fh.read(), mode))


if __name__ == "__main__":
    main()
