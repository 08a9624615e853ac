"""``driftstream report serve``: the report index and every object it links, served from S3.

A read-only local view: ``GET /`` answers ``reports/index.html``; any other path is the S3
key of the same name (reports, heatmaps, explanations, window manifests).
"""

from __future__ import annotations

import mimetypes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

from botocore.exceptions import ClientError

from driftstream.object_store import ObjectStore

INDEX_KEY = "reports/index.html"


def make_server(store: ObjectStore, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = unquote(urlparse(self.path).path).lstrip("/")
            key = path or INDEX_KEY
            if ".." in key.split("/"):
                self.send_error(400, "bad path")
                return
            try:
                body = store.get(key)
            except ClientError:
                self.send_error(404, f"no object {key}")
                return
            self.send_response(200)
            self.send_header("Content-Type", mimetypes.guess_type(key)[0] or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return ThreadingHTTPServer((host, port), Handler)
