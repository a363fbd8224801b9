#!/usr/bin/env python3
"""A decoy cloud-metadata endpoint for the local cluster's network namespace.

usage: metadata-decoy.py ADDRESS PORT LOG

Answers every GET with the word "decoy" and appends "<client address> <method> <path>" per
request to LOG, so a test can tell whether anything reached it (and from where). It runs only
inside the namespace that e2e/cluster creates, on an address of an interface there.
"""
import http.server
import sys


class Decoy(http.server.BaseHTTPRequestHandler):
    log_path = ""

    def do_GET(self):  # noqa: N802 (the standard library's name)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"{self.client_address[0]} GET {self.path}\n")
        body = b"decoy\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    address, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Decoy.log_path = log
    http.server.ThreadingHTTPServer((address, port), Decoy).serve_forever()


if __name__ == "__main__":
    main()
