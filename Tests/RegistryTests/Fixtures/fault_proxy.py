#!/usr/bin/env python3
"""A misbehaving HTTP front for a real registry, for Ferry's resilience tests (loopback only).

Every request under /v2/<name>/… is forwarded to --upstream unless it is chosen for a fault:
with --every N, every Nth such request gets the next fault of --faults, in turn:
  reset   close the connection with a TCP RST, no answer
  500     answer 500 (any other status number: that status)
  429     answer 429 with Retry-After: 1
  stall   send the headers and half the body, then go silent for --stall-seconds
  cut     send the headers and half the body, then reset the connection
Other switches:
  --corrupt-blobs   flip one byte in the middle of every blob body
  --ignore-range    drop the Range header (the registry then answers 200 with the whole blob)
  --redirect-blobs  answer blob GETs with 307 to /_storage/<id>/… on this proxy (a stand-in for
                    a storage backend); each such URL works --storage-uses times, then 403
  --storage-expires N  signed URLs say (SigV4 style) and enforce that they expire after N seconds
  --storage-base URL  redirect to URL/_storage/… instead (another proxy of this kind, in front of
                    the same registry, then plays the storage backend)
  --log FILE        append "METHOD PATH STATUS" for every request (the request log)
GET /_proxy/stats returns counters as JSON.
"""
import argparse, signal, http.client, itertools, json, os, socket, struct, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}

def main():
    # Spawned from a thread that blocks SIGTERM/SIGINT, we inherit that mask: unblock them so
    # the test's terminate() ends us.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    p = argparse.ArgumentParser()
    p.add_argument("--upstream", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--faults", default="")
    p.add_argument("--every", type=int, default=0)
    p.add_argument("--stall-seconds", type=float, default=30)
    p.add_argument("--corrupt-blobs", action="store_true")
    p.add_argument("--ignore-range", action="store_true")
    p.add_argument("--redirect-blobs", action="store_true")
    p.add_argument("--storage-uses", type=int, default=1000000)
    p.add_argument("--log", default=None)
    p.add_argument("--storage-base", default=None)
    p.add_argument("--storage-expires", type=int, default=0, help="signed URLs carry X-Amz-Date/X-Amz-Expires and die after N s")
    args = p.parse_args()

    faults = [f for f in args.faults.split(",") if f]
    lock = threading.Lock()
    log_lock = threading.Lock()
    stats = {"requests": 0, "faults": 0, "blob_gets": 0, "storage_gets": 0, "storage_refused": 0}
    counter = itertools.count(1)
    fault_cycle = itertools.cycle(faults) if faults else None
    storage_uses = {}
    storage_ids = itertools.count(1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send_response(self, code, message=None):
            if args.log:
                with log_lock, open(args.log, "a") as f:
                    f.write(f"{self.command} {self.path} {code}\n")
            super().send_response(code, message)

        def finish(self):
            try:
                super().finish()
            except OSError:
                pass

        def simple(self, status, body=b"", headers=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def reset(self):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def forward(self, path, body, headers, fault=None, corrupt=False):
            conn = http.client.HTTPConnection(args.upstream, timeout=60)
            conn.request(self.command, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            if corrupt and resp.status in (200, 206) and data:
                data = bytearray(data)
                data[len(data) // 2] ^= 0xFF
                data = bytes(data)
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault == "cut" and len(data) > 1:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.reset()
                return
            if fault == "stall" and len(data) > 1:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                time.sleep(args.stall_seconds)
                self.reset()
                return
            self.wfile.write(data)

        def handle_any(self):
            url = urllib.parse.urlparse(self.path)
            length = int(self.headers.get("Content-Length", "0") or 0)
            body = self.rfile.read(length) if length else None
            if url.path == "/_proxy/stats":
                with lock:
                    return self.simple(200, json.dumps(stats).encode(), {"Content-Type": "application/json"})
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            if args.ignore_range:
                headers = {k: v for k, v in headers.items() if k.lower() != "range"}
            is_blob_get = self.command == "GET" and "/blobs/" in url.path and "/blobs/uploads" not in url.path

            if url.path.startswith("/_storage/"):
                # /_storage/<id>/<original path>
                _, _, sid, rest = url.path.split("/", 3)
                with lock:
                    stats["storage_gets"] += 1
                    used = storage_uses.get(sid, 0) + 1
                    storage_uses[sid] = used
                    expired = used > args.storage_uses
                    query = urllib.parse.parse_qs(url.query)
                    if "X-Amz-Date" in query:
                        signed = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
                        if time.time() > signed + int(query["X-Amz-Expires"][0]):
                            expired = True
                    if expired:
                        stats["storage_refused"] += 1
                if expired:
                    return self.simple(403, b"<Error>Request has expired</Error>", {"Content-Type": "application/xml"})
                # A storage backend takes no registry credentials.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                return self.forward("/" + rest, body, headers, corrupt=args.corrupt_blobs)

            fault = None
            if url.path.startswith("/v2/") and url.path != "/v2/":
                n = next(counter)
                with lock:
                    stats["requests"] += 1
                    if is_blob_get:
                        stats["blob_gets"] += 1
                    if fault_cycle and args.every and n % args.every == 0:
                        fault = next(fault_cycle)
                        stats["faults"] += 1
            if fault == "reset":
                return self.reset()
            if fault and fault.isdigit() and fault != "429":
                return self.simple(int(fault), b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}', {"Content-Type": "application/json"})
            if fault == "429":
                return self.simple(429, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
                                   {"Content-Type": "application/json", "Retry-After": "1"})
            if is_blob_get and args.redirect_blobs:
                with lock:
                    sid = str(next(storage_ids))
                base = args.storage_base or f"http://{self.headers.get('Host')}"
                query = "X-Signature=secret"
                if args.storage_expires:
                    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                    query += f"&X-Amz-Date={stamp}&X-Amz-Expires={args.storage_expires}"
                return self.simple(307, b"", {"Location": f"{base}/_storage/{sid}{url.path}?{query}"})
            self.forward(self.path, body, headers, fault=fault if fault in ("stall", "cut") else None,
                         corrupt=args.corrupt_blobs and is_blob_get)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()

if __name__ == "__main__":
    main()
