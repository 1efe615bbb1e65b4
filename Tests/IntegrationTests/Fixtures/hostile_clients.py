#!/usr/bin/env python3
"""Hostile clients against ferryd's listeners, for a bounded time. Each target is
unix:PATH or tcp:HOST:PORT. Attacks, in turn and at once:
  - malformed request lines and queries (including "?="), garbage bytes, binary junk
  - 10,000 bytes of headers; a declared 1 GiB body (sent slowly, never completed)
  - IDLE connections held open and silent (default 2,000, spread over the targets)
  - slow-loris: a request line sent a byte at a time, never finished
  - early disconnects (request sent, socket closed before the answer) and resets (SO_LINGER 0)
Prints one JSON line: counts of what was sent and how the servers answered.
Usage: hostile_clients.py SECONDS IDLE TARGET...
"""
import json
import random
import socket
import struct
import sys
import threading
import time

counts = {"requests": 0, "answered": 0, "refused": 0, "idle_held": 0, "resets": 0, "errors": 0}
lock = threading.Lock()


def bump(key, n=1):
    with lock:
        counts[key] += n


def connect(target, timeout=5):
    kind, _, rest = target.partition(":")
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(rest)
    else:
        host, port = rest.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=timeout)
    return s


def exchange(target, payload, read=True):
    try:
        s = connect(target)
        s.sendall(payload)
        bump("requests")
        if read:
            data = s.recv(4096)
            bump("answered" if data else "refused")
        s.close()
    except OSError:
        bump("errors")


MALFORMED = [
    b"GET /x?= HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health?=&&=&%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics?a=%ff%fe HTTP/1.1\r\n\r\n",
    b"\x00\x01\x02\x03 garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"POST /mounts HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /mounts HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /mounts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /chunks/" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
    b"POST /mounts HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"image\": 1}",
    b"DELETE /mounts?path=%2F..%2F..%2Fetc HTTP/1.1\r\n\r\n",
]


def malformed(targets, until):
    while time.monotonic() < until:
        for target in targets:
            exchange(target, random.choice(MALFORMED))
            exchange(target, b"GET /health HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 10000 + b"\r\n\r\n")
            exchange(target, bytes(random.getrandbits(8) for _ in range(300)))


def big_body(targets, until):
    while time.monotonic() < until:
        for target in targets:
            try:
                s = connect(target)
                s.sendall(b"POST /mounts HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\n")
                bump("requests")
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:
                    s.sendall(b"x" * 65536)
                s.close()
            except OSError:
                bump("refused")


def slow_loris(targets, until):
    while time.monotonic() < until:
        for target in targets:
            try:
                s = connect(target, timeout=30)
                for b in b"GET /health HTTP/1.1\r\nX-Slow: ":
                    if time.monotonic() > until:
                        break
                    s.send(bytes([b]))
                    time.sleep(0.5)
                s.close()
            except OSError:
                bump("refused")


def disconnects(targets, until):
    while time.monotonic() < until:
        for target in targets:
            exchange(target, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", read=False)
            try:
                s = connect(target)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
                s.close()
                bump("resets")
            except OSError:
                bump("errors")


def idle(targets, n, until):
    held = []
    for i in range(n):
        try:
            held.append(connect(targets[i % len(targets)], timeout=2))
            bump("idle_held")
        except OSError:
            bump("refused")
    while time.monotonic() < until:
        time.sleep(0.2)
    for s in held:
        s.close()


def main():
    seconds, n_idle, targets = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=idle, args=(targets, n_idle, until))]
    for f in (malformed, big_body, slow_loris, disconnects):
        for _ in range(2):
            threads.append(threading.Thread(target=f, args=(targets, until)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
