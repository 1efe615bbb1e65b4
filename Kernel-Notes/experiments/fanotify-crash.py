# Experiments: fanotify pre-content + file-backed EROFS on this host. Run as root.
import ctypes, os, sys, struct, socket, signal, time, hashlib, subprocess, select
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
libc.mount.argtypes = [ctypes.c_char_p]*3 + [ctypes.c_ulong, ctypes.c_char_p]
W = "/tmp/fx/w"
def sh(c): return subprocess.run(c, shell=True, check=True, capture_output=True, text=True).stdout
def setup():
    subprocess.run("umount %s/mnt 2>/dev/null; rm -rf %s" % (W, W), shell=True)
    os.makedirs(W + "/src/d"); os.makedirs(W + "/mnt")
    open(W + "/src/a.bin", "wb").write(os.urandom(300000))
    open(W + "/src/d/b.txt", "w").write("".join("%d\n" % i for i in range(20000)))
    open(W + "/src/small", "w").write("hello\n")
    sh("mkfs.erofs --chunksize=4096 --blobdev=%s/blob.img %s/img.erofs %s/src" % (W, W, W))
    size = os.path.getsize(W + "/blob.img")
    with open(W + "/cache.blob", "wb") as f: f.truncate(size)
def mount():
    r = libc.mount((W + "/img.erofs").encode(), (W + "/mnt").encode(), b"erofs", 1, ("device=%s/cache.blob" % W).encode())
    assert r == 0, os.strerror(ctypes.get_errno())
def umount(): subprocess.run("umount %s/mnt" % W, shell=True)
def group(cloexec=True):
    g = libc.fanotify_init(0x8 | (1 if cloexec else 0), os.O_RDWR | 0o100000)
    assert g >= 0, os.strerror(ctypes.get_errno())
    assert libc.fanotify_mark(g, 1, 0x00100000, -100, (W + "/cache.blob").encode()) == 0
    return g
def parse(buf):
    out, off = [], 0
    while off < len(buf):
        elen, vers, _, mlen, mask, fd, pid = struct.unpack_from("<IBBHQii", buf, off)
        rng = None
        if elen >= 48:
            t, _, l, _, o, c = struct.unpack_from("<BBHIQQ", buf, off + 24); rng = (o, c)
        out.append((mask, fd, pid, rng)); off += elen
    return out
def serve_forever(g, log=None, stall=False):
    blob = open(W + "/blob.img", "rb").read()
    while True:
        for mask, fd, pid, (o, c) in parse(os.read(g, 65536)):
            if log: print("   event fd=%d range=(%d,%d)" % (fd, o, c), file=sys.stderr, flush=True)
            if stall:
                continue
            os.pwrite(fd, blob[o:o + c], o)
            os.write(g, struct.pack("<iI", fd, 1)); os.close(fd)
def spawn(fn, *a):
    pid = os.fork()
    if pid == 0:
        try: fn(*a)
        finally: os._exit(0)
    return pid
def reader(path, expect):
    """Read path in a child process; returns 'ok', 'ZEROS', 'WRONG', or the error."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.closerange(3, w); os.closerange(w + 1, 4096)   # hold no group fd
        try:
            data = open(path, "rb").read()
            res = "ok" if data == expect else ("ZEROS" if data.count(0) == len(data) or expect.replace(b"", b"") and data[:4096] == bytes(4096) else "WRONG")
        except OSError as e:
            res = "error " + os.strerror(e.errno)
        os.write(w, res.encode()); os._exit(0)
    os.close(w)
    return pid, r
def result(pr, timeout=10):
    pid, r = pr
    if select.select([r], [], [], timeout)[0]:
        out = os.read(r, 200).decode(); os.waitpid(pid, 0); os.close(r); return out
    return "BLOCKED"
def kill_reader(pr):
    os.kill(pr[0], 9); os.waitpid(pr[0], 0); os.close(pr[1])
def expected(name): return open(W + "/src/" + name, "rb").read()
def drop_caches():
    # The EROFS page cache would hide the backing file: unmount/remount between experiments.
    umount(); mount()

exp = sys.argv[1]
setup()
if exp == "serve":
    g = group(); mount()
    d = spawn(serve_forever, g, True)
    for n in ["a.bin", "d/b.txt", "small"]:
        print(n, result(reader(W + "/mnt/" + n, expected(n))))
    os.kill(d, 9); os.waitpid(d, 0); umount()
elif exp == "kill-pending":
    # The daemon read the event but never answered; it is SIGKILLed and nobody else holds the group.
    g = group(); mount()
    d = spawn(serve_forever, g, True, True); os.close(g)
    pr = reader(W + "/mnt/a.bin", expected("a.bin")); time.sleep(1)
    print("reader while daemon stalls:", result(pr, 1))
    os.kill(d, 9); os.waitpid(d, 0)
    print("reader after SIGKILL of the only group holder:", result(pr))
    drop_caches()
    print("new reader with no group at all:", result(reader(W + "/mnt/d/b.txt", expected("d/b.txt"))))
    umount()
elif exp == "kill-queued":
    # Events still queued (not read) when the last holder dies.
    g = group(); mount()
    pr = reader(W + "/mnt/a.bin", expected("a.bin")); time.sleep(1)
    print("reader, nobody reading the group:", result(pr, 1))
    os.close(g)
    print("reader after the group fd closed with the event queued:", result(pr))
    umount()
elif exp == "holder":
    # A holder keeps a dup of the group (fork inheritance); the daemon dies with one event pending
    # (read, unanswered) and one queued; a new daemon gets the fd over SCM_RIGHTS.
    g = group(cloexec=False); mount()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    def holder():
        # Hand out the group fd to whoever asks, forever.
        while True:
            if not a.recv(1): return
            socket.send_fds(a, [b"g"], [g])
    h = spawn(holder)
    d = spawn(serve_forever, g, True, True); os.close(g)
    pr1 = reader(W + "/mnt/a.bin", expected("a.bin")); time.sleep(1)
    os.kill(d, 9); os.waitpid(d, 0)
    print("pending reader after daemon SIGKILL, holder alive:", result(pr1, 2))
    pr2 = reader(W + "/mnt/d/b.txt", expected("d/b.txt")); time.sleep(1)
    print("new reader, no daemon, holder alive:", result(pr2, 1))
    b.send(b"?"); _, fds, _, _ = socket.recv_fds(b, 1, 1); g2 = fds[0]
    # Orphaned events (read by the dead daemon) are answered by fd number: probe small numbers.
    orphans = []
    for n in range(3, 1024):
        try:
            os.write(g2, struct.pack("<iI", n, 2 | (5 << 24))); orphans.append(n)
        except OSError as e:
            pass
    print("orphaned event fd numbers answered with FAN_DENY_ERRNO(EIO):", orphans)
    d2 = spawn(serve_forever, g2, True)
    print("pending reader after orphan answer:", result(pr1))
    print("queued reader after new daemon started:", result(pr2))
    drop_caches()
    print("fresh reader with new daemon:", result(reader(W + "/mnt/a.bin", expected("a.bin"))))
    os.kill(d2, 9); os.waitpid(d2, 0)
    b.close(); os.kill(h, 9); os.waitpid(h, 0); os.close(g2)
    drop_caches()
    print("reader after every holder is gone:", result(reader(W + "/mnt/a.bin", expected("a.bin"))))
    umount()
