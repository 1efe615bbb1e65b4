#!/usr/bin/env python3
"""Writes the layer tars of Ferry's rich test image, deterministically.

Usage: make_layers.py OUTDIR [--big-mib N]
Creates OUTDIR/layer1.tar, layer2.tar, layer3.tar (uncompressed; `umoci raw add-layer` adds
them to an image). Together they exercise what real images contain: every entry type, PAX
and GNU long names, xattrs, odd owners and fractional mtimes, whiteouts, opaque directories,
replacements of files by directories and back, hard links within and across layers, a big
sparse-ish file, a 3,000-entry directory and a 40-deep path.
"""
import io
import os
import random
import sys
import tarfile

out = sys.argv[1]
big_mib = 50
if "--big-mib" in sys.argv:
    big_mib = int(sys.argv[sys.argv.index("--big-mib") + 1])
rng = random.Random(1234)
BASE_MTIME = 1_600_000_000


def add_dir(t, name, mode=0o755, uid=0, gid=0, mtime=BASE_MTIME, pax=None):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
    if pax:
        info.pax_headers = pax
    t.addfile(info)


def add_file(t, name, data, mode=0o644, uid=0, gid=0, mtime=BASE_MTIME, pax=None):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
    if pax:
        info.pax_headers = pax
    t.addfile(info, io.BytesIO(data))


def add_special(t, name, kind, linkname="", major=0, minor=0, mode=0o644, uid=0, gid=0, mtime=BASE_MTIME):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.devmajor, info.devminor = major, minor
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, mtime
    t.addfile(info)


def text(n, seed):
    r = random.Random(seed)
    words = [b"ferry", b"erofs", b"chunk", b"layer", b"kernel", b"blob", b"digest", b"\n"]
    return b" ".join(r.choice(words) for _ in range(n // 6))[:n]


def open_tar(name):
    return tarfile.open(os.path.join(out, name), "w", format=tarfile.PAX_FORMAT)


shared_content = text(300_000, 7)  # also written again in layer 3, so it is deduplicated

with open_tar("layer1.tar") as t:
    for d in ["bin", "etc", "usr", "usr/lib", "opt", "srv", "var", "var/cache", "data", "dev"]:
        add_dir(t, d)
    add_file(t, "bin/tool", text(20_000, 1), mode=0o4755)
    add_file(t, "bin/sgid", b"#!/bin/sh\necho sgid\n", mode=0o2755, gid=50)
    add_dir(t, "tmp", mode=0o1777)
    add_file(t, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    add_file(t, "etc/shadow", b"root:*:19000:0:99999:7:::\n", mode=0o640)
    add_file(t, "etc/owned", b"odd owner\n", uid=1_000_000, gid=2_000_000, mtime=1_234_567_890)
    add_file(t, "etc/fractional", b"fractional mtime\n", pax={"mtime": "1700000000.123456789"})
    add_file(t, "etc/old", b"before 1970\n", mtime=0)
    add_file(t, "etc/xattrs", b"with xattrs\n",
             pax={"SCHILY.xattr.user.comment": "hello",
                  "SCHILY.xattr.trusted.overlay.test": "t",
                  "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"})
    add_dir(t, "etc/xdir", pax={"SCHILY.xattr.user.dir": "d" * 200})
    add_file(t, "etc/empty", b"")
    add_file(t, "etc/exact4k", text(4096, 2))
    add_file(t, "etc/shared", shared_content)
    add_special(t, "etc/shared-link", tarfile.LNKTYPE, linkname="etc/shared")
    add_special(t, "etc/passwd-link", tarfile.LNKTYPE, linkname="etc/passwd")
    add_special(t, "bin/sh", tarfile.SYMTYPE, linkname="tool")
    add_special(t, "bin/abs", tarfile.SYMTYPE, linkname="/etc/passwd")
    add_special(t, "bin/dangling", tarfile.SYMTYPE, linkname="../nowhere/at/all")
    add_special(t, "bin/longlink", tarfile.SYMTYPE, linkname="x/" * 300 + "end")
    add_special(t, "dev/null", tarfile.CHRTYPE, major=1, minor=3, mode=0o666)
    add_special(t, "dev/loop9", tarfile.BLKTYPE, major=7, minor=9, mode=0o660, gid=6)
    add_special(t, "dev/bigdev", tarfile.CHRTYPE, major=300, minor=70000, mode=0o600)
    add_special(t, "dev/fifo", tarfile.FIFOTYPE, mode=0o644)
    # big sparse-ish file: mostly zeros with data islands (zero chunks become holes)
    big = bytearray(big_mib << 20)
    for i in range(0, len(big), 7 << 20):
        island = bytes(rng.getrandbits(8) for _ in range(4096)) * 16
        big[i:i + len(island)] = island[: len(big) - i]
    big[-5:] = b"tail!"
    add_file(t, "usr/lib/big.bin", bytes(big))
    add_file(t, "usr/lib/odd-size", text(1_500_001, 3))
    # names: long, UTF-8, not UTF-8
    add_file(t, "data/" + "L" * 250, b"long name\n")
    add_file(t, "data/ünïcödé-名前-🚢", b"utf-8 name\n")
    add_dir(t, "data/dir3000")
    for i in range(3000):
        add_file(t, f"data/dir3000/entry-{i:05d}-{'n' * (i % 40)}", f"{i}\n".encode() * (i % 5))
    deep = "data/deep"
    add_dir(t, deep)
    for i in range(40):
        deep += f"/level{i:02d}"
        add_dir(t, deep)
    add_file(t, deep + "/bottom.txt", b"40 levels down\n")
    for name in ["a", "b"]:
        add_file(t, f"opt/{name}", f"lower {name}\n".encode())
    add_dir(t, "opt/sub")
    add_file(t, "opt/sub/inner", b"lower inner\n")
    add_file(t, "srv/x", b"a file that becomes a directory\n")
    add_file(t, "var/cache/entry", b"a directory that becomes a file\n")
    add_dir(t, "gone")
    add_file(t, "gone/file", b"removed by a whiteout of its directory\n")

# A name that is not valid UTF-8 goes in with GNU format (PAX would need UTF-8 path records).
with tarfile.open(os.path.join(out, "layer1b.tar"), "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as t:
    add_file(t, "data/raw-\udcff\udcfe-name", b"not utf-8\n")
    add_file(t, "data/" + "G" * 200 + "/".join([""] * 1) + "-gnu-long", b"gnu long name\n")

with open_tar("layer2.tar") as t:
    add_file(t, "etc/.wh.shadow", b"")
    add_dir(t, "opt", mtime=BASE_MTIME + 10)
    add_file(t, "opt/.wh..wh..opq", b"")
    add_file(t, "opt/c", b"upper c\n")
    add_dir(t, "srv/x", mode=0o750)
    add_file(t, "srv/x/child", b"child of the new directory\n")
    add_file(t, "var/cache", b"now a file\n")
    # Builders write the linked file's own metadata into a hard-link header (containerd applies
    # it to the shared inode; umoci ignores it).
    add_special(t, "bin/tool-link", tarfile.LNKTYPE, linkname="bin/tool", mode=0o4755)
    add_file(t, "etc/passwd", b"root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n")
    add_file(t, "etc/xattrs2", b"", pax={"SCHILY.xattr.user.a": "1", "SCHILY.xattr.user.b": "2" * 100})

with open_tar("layer3.tar") as t:
    add_file(t, ".wh.gone", b"")
    add_file(t, "etc/shared-again", shared_content)
    add_file(t, "usr/lib/odd-copy", text(1_500_001, 3))
    add_special(t, "bin/sh", tarfile.SYMTYPE, linkname="tool-link")
    add_file(t, "bin/new", text(100, 9), mode=0o700, uid=65534, gid=65534)
