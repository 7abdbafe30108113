#!/usr/bin/env python3
"""HTTP server that the end-to-end harness runs inside a simulated host's network namespace.

Clients reach it *through* the VPN tunnel as HOST-IP:PORT (the namespace's own address) from the
server's side; the server refuses 127.0.0.1, which the harness checks.

  GET /payload     the bytes of --payload (a random file the harness wrote and knows)
  GET /drip/SECS   SECS*10 KiB sent as 1 KiB every 100 ms (a long-running transfer); the byte at
                   stream offset k is k % 251, so the client can check it arrived intact
  GET /stream/N    N bytes (at most 1 GiB) as fast as the path takes them; the byte at stream
                   offset k is k % 251 (bulk downloads for throughput measurements)
  POST /sink       reads and discards the request body (Content-Length), answers with the number
                   of bytes it read (bulk uploads for throughput measurements)
  GET /            a one-line greeting

With --tls-port, the same handler also answers over TLS 1.3 (certificate --cert, key --key) on
every address: the real site a VLESS + Reality server in this namespace borrows its handshakes
from (`dest localhost:PORT`).
"""
import argparse
import http.server
import socketserver
import ssl
import sys
import threading
import time

CHUNK = 1024
TICK = 0.1
BULK_CHUNK = 64 * 1024
MAX_STREAM = 1 << 30
# 64 KiB + 251 bytes of the k % 251 pattern: any 64 KiB window of it starts at a known offset.
PATTERN = bytes(k % 251 for k in range(BULK_CHUNK + 251))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    payload_path = ""

    def do_GET(self):
        if self.path == "/payload":
            with open(self.payload_path, "rb") as f:
                body = f.read()
            self._headers(len(body))
            self.wfile.write(body)
        elif self.path.startswith("/drip/"):
            try:
                secs = max(1, min(600, int(self.path[len("/drip/"):])))
            except ValueError:
                self.send_error(400, "bad duration")
                return
            chunks = int(secs / TICK)
            self._headers(chunks * CHUNK)
            for i in range(chunks):
                base = i * CHUNK
                self.wfile.write(bytes((base + j) % 251 for j in range(CHUNK)))
                self.wfile.flush()
                time.sleep(TICK)
        elif self.path.startswith("/stream/"):
            try:
                total = int(self.path[len("/stream/"):])
            except ValueError:
                self.send_error(400, "bad size")
                return
            if not 0 <= total <= MAX_STREAM:
                self.send_error(400, "size out of range")
                return
            self._headers(total)
            sent = 0
            try:
                while sent < total:
                    n = min(BULK_CHUNK, total - sent)
                    start = sent % 251
                    self.wfile.write(PATTERN[start:start + n])
                    sent += n
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: a measurement window ended
        elif self.path == "/":
            body = b"hello from a vpn-fleet test host, through the tunnel\n"
            self._headers(len(body), "text/plain")
            self.wfile.write(body)
        else:
            self.send_error(404)

    def do_POST(self):
        if self.path != "/sink":
            self.send_error(404)
            return
        try:
            remaining = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.send_error(411, "Content-Length required")
            return
        got = 0
        while got < remaining:
            data = self.rfile.read(min(BULK_CHUNK, remaining - got))
            if not data:
                break
            got += len(data)
        body = f"{got}\n".encode()
        self._headers(len(body), "text/plain")
        self.wfile.write(body)

    def _headers(self, length, ctype="application/octet-stream"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        self.end_headers()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--payload", required=True)
    ap.add_argument("--tls-port", type=int)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    Handler.payload_path = args.payload
    if args.tls_port:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(args.cert, args.key)
        tls = Server((args.bind, args.tls_port), Handler)
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
        print(f"tls listening on {args.bind}:{args.tls_port}", flush=True)
    server = Server((args.bind, args.port), Handler)
    print(f"listening on {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
