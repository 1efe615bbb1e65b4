#!/usr/bin/env python3
"""Writes small OCI layouts with one broken layer each, for Ferry's bad-input tests.

Usage: make_bad_images.py OUTDIR. Creates OUTDIR/<case>/ (an OCI layout tagged "t") for each case
below, and prints "<case> <text the error must contain>" lines.
"""
import gzip, hashlib, io, json, os, sys, tarfile

out = sys.argv[1]


def tar_bytes(entries, truncate=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, data, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    b = buf.getvalue()
    return b[:truncate] if truncate else b


def layout(case, layer, media_type, lie_digest=False):
    d = os.path.join(out, case)
    os.makedirs(os.path.join(d, "blobs", "sha256"))
    def put(b):
        h = hashlib.sha256(b).hexdigest()
        open(os.path.join(d, "blobs", "sha256", h), "wb").write(b)
        return h
    layer_digest = put(layer)
    if lie_digest:
        layer_digest = hashlib.sha256(b"something else").hexdigest()
        open(os.path.join(d, "blobs", "sha256", layer_digest), "wb").write(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": "sha256:" + config_digest, "size": len(config)},
                           "layers": [{"mediaType": media_type, "digest": "sha256:" + layer_digest, "size": len(layer)}]}).encode()
    manifest_digest = put(manifest)
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": "sha256:" + manifest_digest, "size": len(manifest),
               "annotations": {"org.opencontainers.image.ref.name": "t"}}]}, open(os.path.join(d, "index.json"), "w"))
    open(os.path.join(d, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
    return "sha256:" + layer_digest


TAR = "application/vnd.oci.image.layer.v1.tar"
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
good = [("etc", tarfile.DIRTYPE, b"", ""), ("etc/hosts", tarfile.REGTYPE, b"127.0.0.1 localhost\n" * 400, "")]
cases = []
d = layout("truncated-tar", tar_bytes(good, truncate=1200), TAR); cases.append(("truncated-tar", d))
d = layout("bad-gzip", b"\x1f\x8b\x08\x00" + os.urandom(300), GZ); cases.append(("bad-gzip", d))
d = layout("dotdot", tar_bytes(good + [("../escape", tarfile.REGTYPE, b"x", "")]), TAR); cases.append(("dotdot", "../escape"))
d = layout("absolute", tar_bytes(good + [("/etc/passwd", tarfile.REGTYPE, b"x", "")]), TAR); cases.append(("absolute", "/etc/passwd"))
d = layout("dangling-hardlink", tar_bytes(good + [("etc/link", tarfile.LNKTYPE, b"", "etc/nothing")]), TAR); cases.append(("dangling-hardlink", "etc/nothing"))
d = layout("digest-mismatch", tar_bytes(good), TAR, lie_digest=True); cases.append(("digest-mismatch", "digest mismatch"))
d = layout("unknown-media-type", tar_bytes(good), "application/x-unknown-layer"); cases.append(("unknown-media-type", "application/x-unknown-layer"))
for case, text in cases:
    print(case, text)
