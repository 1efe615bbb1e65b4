#!/usr/bin/env python3
"""A peer that lies: answers ferryd's peer protocol by asking a real peer (UPSTREAM) and
flipping one byte of every chunk it passes on (after the 8-byte record header). Like a real
peer it asks from its own listed address (peers serve only the addresses they list).
Usage: corrupting_peer.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT
"""
import http.client
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = ""
SOURCE = ""


class Peer(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            return self.answer(200, b'{"status":"ok"}')
        if not self.path.startswith("/chunks/"):
            return self.answer(404, b"{}")
        try:
            up_host, up_port = UPSTREAM.rsplit(":", 1)
            connection = http.client.HTTPConnection(up_host, int(up_port), timeout=10, source_address=(SOURCE, 0))
            connection.request("GET", self.path)
            response = connection.getresponse()
            if response.status != 200:
                connection.close()
                return self.answer(404, b"{}")
            body = bytearray(response.read())
            connection.close()
        except (http.client.HTTPException, OSError):
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
    SOURCE = host
    ThreadingHTTPServer((host, int(port)), Peer).serve_forever()
