"""``jobwatch serve``: the status page on this machine, over the same code API Gateway reaches
(:mod:`jobwatch.web`), with the standard library's HTTP server on 127.0.0.1.

It reads the same settings (``JOBWATCH_STORE_URL``...) as every other command. Sign-in needs
``JOBWATCH_API_KEY``; without one, a random key is made for this run and printed once on the terminal (never in
a URL). Served over plain HTTP on loopback, so the session cookie goes without ``Secure`` (browsers would drop
it otherwise); behind a TLS proxy pass ``--secure-cookie``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

DEFAULT_PORT = 8765
MAX_BODY = 64 * 1024
CONNECTION_TIMEOUT = 15.0  # seconds a connection may sit idle or half-sent before it is closed


def make_server(app: Any, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, secure_cookie: bool = False,
                clock: Callable[[], float] | None = None, timeout: float = CONNECTION_TIMEOUT) -> HTTPServer:
    """An HTTP server answering the status page from ``app``: a thread per connection (a browser's idle
    preconnect must not hold up every other request), each timed out after ``timeout`` seconds; the pages
    themselves are answered one at a time, as the App and its store are shared."""
    from jobwatch.web import WebRequest, WebResponse, handle

    app_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "jobwatch"
        sys_version = ""

        def setup(self) -> None:
            self.timeout = timeout  # StreamRequestHandler puts it on the socket
            super().setup()

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            raw_length = (self.headers.get("Content-Length") or "0").strip()
            if not raw_length.isdigit():  # negative, not a number: never guess how much to read
                self.send_error(400, f"bad Content-Length {raw_length[:40]!r}")
                return
            length = int(raw_length)
            if length > MAX_BODY:
                self.send_error(413, "request body too large")
                return
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = WebRequest(self.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                             headers, body, secure=secure_cookie)
            if not req.path.startswith("/ui"):
                self.send_response(303)
                self.send_header("Location", "/ui")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            try:
                with app_lock:
                    resp = handle(app, req, **({"clock": clock} if clock else {}))
            except Exception as exc:  # a bug or a store fault: answer 500 and keep serving
                from jobwatch.core.redact import scrub

                print(f"serve: {req.method} {parts.path}: {scrub(f'{type(exc).__name__}: {exc}')[:500]}",
                      file=sys.stderr)
                resp = WebResponse(500, "internal error; see the terminal", "text/plain; charset=utf-8")
            data = resp.body.encode("utf-8") if isinstance(resp.body, str) else resp.body
            self.send_response(resp.status)
            for k, v in resp.all_headers().items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            if os.environ.get("JOBWATCH_SERVE_ACCESS_LOG"):
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True  # a stuck connection never keeps the process from exiting
    return server


def serve_in_thread(server: HTTPServer) -> threading.Thread:
    t = threading.Thread(target=server.serve_forever, name="jobwatch-serve", daemon=True)
    t.start()
    return t


def _cmd_serve(args: argparse.Namespace) -> int:
    from jobwatch.cli.common import build_app

    env = dict(os.environ)
    generated = None
    if not env.get("JOBWATCH_API_KEY"):
        generated = secrets.token_urlsafe(24)
        env["JOBWATCH_API_KEY"] = generated
    app = build_app(env)
    try:
        server = make_server(app, args.host, args.port, secure_cookie=args.secure_cookie)
    except OSError as exc:
        print(f"serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        app.close()
        return 1
    host, port = str(server.server_address[0]), int(server.server_address[1])
    print(f"status page: http://{host}:{port}/ui", flush=True)
    if generated:
        print(f"JOBWATCH_API_KEY is not set; sign in with this key for this run: {generated}", flush=True)
    else:
        print("sign in with JOBWATCH_API_KEY", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
    return 0


def register(subparsers: Any) -> None:
    from jobwatch.cli.common import port

    p = subparsers.add_parser("serve", help="the status page on this machine (http://127.0.0.1:8765/ui)")
    p.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--secure-cookie", action="store_true",
                   help="mark the session cookie Secure (when a TLS proxy is in front)")
    p.set_defaults(func=_cmd_serve)
