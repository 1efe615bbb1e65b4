#!/usr/bin/env python3
"""A peer that lies: answers ferryd's peer protocol by asking a real peer (UPSTREAM) and
flipping one byte of every chunk it passes on (after the 8-byte record header).
Usage: corrupting_peer.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT
"""
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = ""


class Peer(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, b'{"status":"ok"}')
        if not self.path.startswith("/chunks/"):
            return self.answer(404, b"{}")
        try:
            with urllib.request.urlopen(f"http://{UPSTREAM}{self.path}", timeout=10) as response:
                body = bytearray(response.read())
        except (urllib.error.URLError, OSError):
            return self.answer(404, b"{}")
        if len(body) > 8:
            body[8 + (len(body) - 8) // 2] ^= 0x5A
        self.answer(200, bytes(body))

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    host, port = sys.argv[1].rsplit(":", 1)
    UPSTREAM = sys.argv[2]
    ThreadingHTTPServer((host, int(port)), Peer).serve_forever()
