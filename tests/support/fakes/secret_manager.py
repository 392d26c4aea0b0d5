"""A local Secret Manager REST endpoint (v1 list and access), enough for the real client.

The real `google-cloud-secret-manager` client talks to it with `transport="rest"`; the
project has no emulator for Secret Manager, so this speaks the documented JSON API.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import google_crc32c

_LIST = re.compile(r"^/v1/(projects/[^/]+/secrets/[^/]+)/versions$")
_ACCESS = re.compile(r"^/v1/(projects/[^/]+/secrets/[^/]+)/versions/(\d+):access$")


class FakeSecretManager:
    """Secrets as {secret name: [(payload, state)]}; version N is index N-1."""

    def __init__(self) -> None:
        self.secrets: dict[str, list[tuple[str, str]]] = {}
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests += 1
                path = self.path.split("?", 1)[0]
                if match := _LIST.match(path):
                    versions = fake.secrets.get(match[1])
                    if versions is None:
                        return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no secret"}})
                    listed = [
                        {"name": f"{match[1]}/versions/{i}", "state": state}
                        for i, (_, state) in enumerate(versions, start=1)
                        if "state:ENABLED" not in self.path or state == "ENABLED"
                    ]
                    return self._send(200, {"versions": listed, "totalSize": len(listed)})
                if match := _ACCESS.match(path):
                    versions = fake.secrets.get(match[1], [])
                    index = int(match[2]) - 1
                    if not 0 <= index < len(versions) or versions[index][1] != "ENABLED":
                        return self._send(
                            400 if 0 <= index < len(versions) else 404,
                            {"error": {"code": 400, "status": "FAILED_PRECONDITION", "message": "not enabled"}},
                        )
                    data = versions[index][0].encode()
                    payload = {"data": base64.b64encode(data).decode(), "dataCrc32c": str(google_crc32c.value(data))}
                    return self._send(200, {"name": f"{match[1]}/versions/{match[2]}", "payload": payload})
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": path}})

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
