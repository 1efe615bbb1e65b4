#!/usr/bin/env python3
"""A counting front for a registry: forwards TCP connections from 127.0.0.1:LISTEN to UPSTREAM
and counts the bytes the upstream sends back (the registry's egress). A second port answers
GET /            -> {"bytes": N, "connections": M}
GET /reset       -> zeroes the counters
Usage: counting_front.py LISTEN_PORT UPSTREAM_HOST:PORT STATS_PORT
"""
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
counters = {"bytes": 0, "connections": 0}


def pump(src, dst, count):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if count:
                with lock:
                    counters["bytes"] += len(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen_port, upstream):
    host, port = upstream.rsplit(":", 1)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(256)
    while True:
        client, _ = server.accept()
        try:
            up = socket.create_connection((host, int(port)))
        except OSError:
            client.close()
            continue
        with lock:
            counters["connections"] += 1
        threading.Thread(target=pump, args=(client, up, False), daemon=True).start()
        threading.Thread(target=pump, args=(up, client, True), daemon=True).start()


class Stats(BaseHTTPRequestHandler):
    def do_GET(self):
        with lock:
            if self.path == "/reset":
                counters["bytes"] = 0
                counters["connections"] = 0
            body = json.dumps(counters).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    listen_port, upstream, stats_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    threading.Thread(target=serve, args=(listen_port, upstream), daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", stats_port), Stats).serve_forever()
