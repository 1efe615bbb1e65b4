#!/usr/bin/env python3
"""A token service for distribution's `auth: token` mode, for Ferry's registry tests.

It makes a fresh key and self-signed certificate, writes the certificate (PEM) for the
registry's `rootcertbundle`, and issues JWTs on GET (Basic auth or anonymous) and on POST (the
OAuth2 password form). Tokens name the signing key with `kid`, which distribution 2.8 matches
against the libtrust key ID of the certificate's public key: the SHA-256 of the DER
SubjectPublicKeyInfo, first 240 bits, base32 without padding, in groups of four joined by ':'.

Distribution accepts tokens 60 s past `exp` (token.Leeway); to make a token die after
`--lifetime` seconds for real, `exp` is set 60 s earlier than the advertised `expires_in`.
"""
import argparse, signal, base64, datetime, hashlib, json, os, threading, time, urllib.parse, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

LEEWAY = 60

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def libtrust_kid(public_key):
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i:i + 4] for i in range(0, len(text), 4))

def make_key_and_cert(kind):
    key = ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-test-token-issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert

def sign(key, kind, payload):
    if kind == "ec":
        r, s = decode_dss_signature(key.sign(payload, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return key.sign(payload, padding.PKCS1v15(), hashes.SHA256())

def main():
    # Spawned from a thread that blocks SIGTERM/SIGINT, we inherit that mask: unblock them so
    # the test's terminate() ends us.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--cert-out", required=True)
    p.add_argument("--key-type", choices=["rsa", "ec"], default="rsa")
    p.add_argument("--service", default="ferry-test")
    p.add_argument("--issuer", default="ferry-test-issuer")
    p.add_argument("--user", default="alice")
    p.add_argument("--password", default="wonderland")
    p.add_argument("--lifetime", type=int, default=300, help="seconds until the registry rejects the token")
    p.add_argument("--advertise", type=int, default=None, help="expires_in told to the client (default: lifetime)")
    p.add_argument("--no-post", action="store_true", help="answer POST with 405 (GET-only token service)")
    args = p.parse_args()

    key, cert = make_key_and_cert(args.key_type)
    with open(args.cert_out, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    kid = libtrust_kid(key.public_key())
    alg = "ES256" if args.key_type == "ec" else "RS256"
    stats = {"get": 0, "post": 0, "issued": 0, "refused": 0}
    lock = threading.Lock()

    def issue(subject, scopes, authenticated):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            name, actions = ":".join(parts[1:-1]), parts[-1].split(",")
            allowed = [a for a in actions if authenticated or a == "pull"]
            access.append({"type": "repository", "name": name, "actions": allowed})
        now = int(time.time())
        claims = {"iss": args.issuer, "sub": subject, "aud": args.service, "exp": now + args.lifetime - LEEWAY,
                  "nbf": now - 1, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        header = {"typ": "JWT", "alg": alg, "kid": kid}
        signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
        token = signing_input.decode() + "." + b64url(sign(key, args.key_type, signing_input))
        with lock:
            stats["issued"] += 1
        expires_in = args.advertise if args.advertise is not None else args.lifetime
        return {"token": token, "access_token": token, "expires_in": expires_in,
                "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, obj, extra=None):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def refuse(self):
            with lock:
                stats["refused"] += 1
            self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                       {"WWW-Authenticate": 'Basic realm="token"'})

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path == "/stats":
                with lock:
                    return self.reply(200, dict(stats))
            if url.path != "/token":
                return self.reply(404, {"error": "not found"})
            with lock:
                stats["get"] += 1
            query = urllib.parse.parse_qs(url.query)
            authenticated, subject = False, ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if user != args.user or password != args.password:
                    return self.refuse()
                authenticated, subject = True, user
            self.reply(200, issue(subject, query.get("scope", []), authenticated))

        def do_POST(self):
            url = urllib.parse.urlparse(self.path)
            length = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            if url.path != "/token":
                return self.reply(404, {"error": "not found"})
            if args.no_post:
                return self.reply(405, {"error": "use GET"})
            with lock:
                stats["post"] += 1
            if form.get("grant_type") != ["password"] or form.get("username") != [args.user] or form.get("password") != [args.password]:
                return self.reply(401, {"error": "invalid_grant"})
            scopes = " ".join(form.get("scope", [])).split()
            self.reply(200, issue(args.user, scopes, True))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()

if __name__ == "__main__":
    main()
