"""A local server speaking the Compute Engine metadata protocol, on 127.0.0.1.

GET only; requests without `Metadata-Flavor: Google` get 403, unknown paths 404, as on a VM.
`values` maps paths under /computeMetadata/v1/ (e.g. `instance/attributes/model`) to text.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/computeMetadata/v1/"


class FakeMetadataServer:
    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.requests.append(path)
                value = fake.values.get(path.removeprefix(PREFIX)) if path.startswith(PREFIX) else None
                flavored = self.headers.get("Metadata-Flavor") == "Google"
                body = value.encode() if flavored and value is not None else b""
                status = 403 if not flavored else 200 if value is not None else 404
                self.send_response(status)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/text")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/computeMetadata/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def set_attributes(self, attributes: dict[str, str]) -> None:
        """Replace the instance's custom attributes."""
        self.values = {k: v for k, v in self.values.items() if not k.startswith("instance/attributes/")}
        self.values.update({f"instance/attributes/{name}": value for name, value in attributes.items()})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
