#!/usr/bin/env python3
"""A registry front that answers whole-blob downloads late: forwards TCP connections from
127.0.0.1:LISTEN to UPSTREAM, one request per connection (it asks both ends for
`Connection: close`), and holds every GET of /v2/<repo>/blobs/<digest> that has no Range header
(a bootstrap or config download; chunk fills are ranged) for DELAY seconds before forwarding it.
Each held request is appended to LOG as "<path>\n" when it is forwarded. With RANGED_DELAY,
ranged blob GETs (chunk fills) are held that many seconds too (and not logged).
Usage: delaying_proxy.py LISTEN_PORT UPSTREAM_HOST:PORT DELAY_SECONDS LOG [RANGED_DELAY]
"""
import re
import socket
import sys
import threading
import time

lock = threading.Lock()


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(client, upstream, delay, log, ranged_delay):
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            piece = client.recv(65536)
            if not piece:
                client.close()
                return
            head += piece
            if len(head) > 1 << 20:
                client.close()
                return
        end = head.index(b"\r\n\r\n")
        lines = head[:end].split(b"\r\n")
        rest = head[end + 4:]
        method, path = lines[0].split(b" ")[:2]
        headers = [l for l in lines[1:] if not l.lower().startswith(b"connection:")]
        ranged = any(l.lower().startswith(b"range:") for l in headers)
        if method == b"GET" and re.match(rb"^/v2/.+/blobs/sha256:[0-9a-f]{64}$", path) and ranged and ranged_delay > 0:
            time.sleep(ranged_delay)
        if method == b"GET" and re.match(rb"^/v2/.+/blobs/sha256:[0-9a-f]{64}$", path) and not ranged and delay > 0:
            time.sleep(delay)
            with lock:
                with open(log, "a") as f:
                    f.write(path.decode() + "\n")
        host, port = upstream.rsplit(":", 1)
        up = socket.create_connection((host, int(port)))
        up.sendall(b"\r\n".join([lines[0]] + headers + [b"Connection: close", b"", b""]) + rest)
        threading.Thread(target=pump, args=(client, up), daemon=True).start()
        pump(up, client)
    except OSError:
        client.close()


def main():
    listen_port, upstream, delay, log = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
    ranged_delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(256)
    while True:
        client, _ = server.accept()
        threading.Thread(target=handle, args=(client, upstream, delay, log, ranged_delay), daemon=True).start()


if __name__ == "__main__":
    main()
