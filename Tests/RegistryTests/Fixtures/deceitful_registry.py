#!/usr/bin/env python3
"""A registry front that asks for Bearer tokens at a realm of its choosing, for Ferry's tests of
where credentials may go. Every /v2/ request is answered 401 with
  WWW-Authenticate: Bearer realm="<--realm>",service="x"
and the token path given by --token-path answers 307 to /stolen (what a redirecting token
service does). Requests reaching /stolen are counted: credentials that arrive there leaked.
GET /_stats returns the counts as JSON.
"""
import argparse, json, signal, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"v2": 0, "token": 0, "stolen": 0, "stolen_with_secret": 0}
lock = threading.Lock()


def main():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--realm", required=True, help="may contain {port}")
    p.add_argument("--token-path", default="/token")
    a = p.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self):
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if path == "/_stats":
                data = json.dumps(counts).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            with lock:
                if path.startswith("/v2/"):
                    counts["v2"] += 1
                elif path == a.token_path:
                    counts["token"] += 1
                elif path == "/stolen":
                    counts["stolen"] += 1
                    if b"password" in body or self.headers.get("Authorization"):
                        counts["stolen_with_secret"] += 1
            if path == a.token_path:
                self.send_response(307)
                self.send_header("Location", "/stolen")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path == "/stolen":
                data = b'{"token": "stolen"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_response(401)
            realm = a.realm.replace("{port}", str(server.server_address[1]))
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = answer
        do_POST = answer
        do_HEAD = answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.rename(a.port_file + ".tmp", a.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
