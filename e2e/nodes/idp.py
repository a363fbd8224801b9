"""A test OIDC identity provider for the real-node tests, inside the cluster's namespace.

usage: idp.py serve DIR ADDRESS PORT     generate a CA, a server certificate for ADDRESS and an
                                         ES256 signing key in DIR; serve discovery and the JWKS
                                         over HTTPS at https://ADDRESS:PORT; DIR/ready when up
       idp.py token DIR SUBJECT AUDIENCE print a token for SUBJECT (scope mcp:tools, 1 hour)

DIR/ca.pem is the CA a gateway needs to fetch the JWKS (spec.auth.oidcCASecretRef).

POST /token is an OAuth 2.0 token endpoint for one client (`palisade-exchange`, secret in
DIR/client-secret, HTTP Basic): RFC 8693 token exchange (the subject token must be one of this
issuer's, signature and expiry checked; the new token keeps its subject, names the client in
`act` and carries the requested audience and scope) and client_credentials.
"""
import base64
import datetime
import http.server
import json
import os
import ssl
import sys
import time
import urllib.parse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import ipaddress


def b64(n: int) -> str:
    return jwt.utils.base64url_encode(n.to_bytes(32, "big")).decode()


def pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def serve(d: str, address: str, port: int) -> None:
    os.makedirs(d, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "palisade test IdP CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(f"{d}/ca.pem", "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(f"{d}/tls.pem", "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM) + pem(key))
    signing = ec.generate_private_key(ec.SECP256R1())
    with open(f"{d}/signing.pem", "wb") as f:
        f.write(pem(signing))
    issuer = f"https://{address}:{port}"
    with open(f"{d}/issuer", "w") as f:
        f.write(issuer)
    numbers = signing.public_key().public_numbers()
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y),
                      "alg": "ES256", "use": "sig", "kid": "k1"}]}
    discovery = {"issuer": issuer, "jwks_uri": f"{issuer}/jwks",
                 "authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token"}

    client_secret = base64.urlsafe_b64encode(os.urandom(18)).decode()
    with open(f"{d}/client-secret", "w") as f:
        f.write(client_secret)
    public = signing.public_key()

    def issue(form: dict) -> tuple[int, dict]:
        grant = form.get("grant_type", "")
        scope = form.get("scope", "")
        audience = form.get("audience", "")
        if grant == "urn:ietf:params:oauth:grant-type:token-exchange":
            try:
                claims = jwt.decode(form.get("subject_token", ""), public, algorithms=["ES256"],
                                    issuer=issuer, options={"verify_aud": False})
            except jwt.PyJWTError:
                return 400, {"error": "invalid_grant"}
            subject, act = claims["sub"], {"sub": "palisade-exchange"}
        elif grant == "client_credentials":
            subject, act = "palisade-exchange", None
        else:
            return 400, {"error": "unsupported_grant_type"}
        now = int(time.time())
        issued = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now - 5,
                  "exp": now + 600, "scope": scope}
        if act:
            issued["act"] = act
        token = jwt.encode(issued, signing, algorithm="ES256", headers={"kid": "k1"})
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 600,
                     "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802
            if self.path != "/token":
                return self.reply(404, {"error": "not_found"})
            expected = "Basic " + base64.b64encode(f"palisade-exchange:{client_secret}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self.reply(401, {"error": "invalid_client"})
            length = min(int(self.headers.get("Content-Length", "0")), 65536)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            self.reply(*issue(form))

        def do_GET(self):  # noqa: N802
            body = {"/.well-known/openid-configuration": discovery, "/jwks": jwks}.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{d}/tls.pem")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with open(f"{d}/ready", "w") as f:
        f.write("ready")
    server.serve_forever()


def token(d: str, subject: str, audience: str) -> None:
    with open(f"{d}/signing.pem", "rb") as f:
        key = f.read()
    with open(f"{d}/issuer") as f:
        issuer = f.read()
    now = int(time.time())
    claims = {"iss": issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now - 5,
              "exp": now + 3600, "scope": "mcp:tools"}
    print(jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"}))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "token":
        token(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
