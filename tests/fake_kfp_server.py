"""A stand-in for a Kubeflow Pipelines API server, for tests only.

It answers, on 127.0.0.1, the KFP v2beta1 endpoints the ``--host`` flow of a generated
script uses through ``kfp.Client`` (healthz, pipeline list / upload / upload_version /
versions, experiments list / create, run create), keeps what it was sent in memory and
records every request, so a test can check what a real cluster would have received.
It is not a cluster: nothing runs. Options make it refuse requests (``status=403``)
or demand a bearer token / cookie, to test the failure paths; ``run_states`` scripts
what ``GET /runs/{id}`` answers over time, for ``--wait``.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PREFIX = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    files: dict[str, bytes] = field(default_factory=dict)
    """Multipart uploads: form field -> content."""

    def json(self):
        return json.loads(self.body or b"{}")


class FakeKFPServer:
    """``with FakeKFPServer() as server: ... server.url ... server.requests``."""

    def __init__(self, status: int | None = None, token: str | None = None,
                 cookie: str | None = None, run_states: list[tuple[str, dict]] | None = None,
                 tls: tuple[str, str] | None = None):
        self.refuse_status = status
        self.run_states = run_states or [("SUCCEEDED", {})]
        """What successive ``GET /runs/{id}`` answer: (run state, {step: state or
        (state, error message)}); the last one repeats."""
        self.run_polls: dict[str, int] = {}
        self.token = token
        self.cookie = cookie
        self.requests: list[Request] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        """pipeline id -> versions, oldest first; each keeps its uploaded YAML."""
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.scheme = "http"
        if tls:  # (certificate file, key file): serve HTTPS
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def __enter__(self) -> FakeKFPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    # -- the API ---------------------------------------------------------------

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def _authorized(self, request: Request) -> bool:
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return False
        if self.cookie and self.cookie not in request.headers.get("cookie", ""):
            return False
        return True

    def handle(self, request: Request) -> tuple[int, dict]:
        if self.refuse_status:
            return self.refuse_status, {"error": "refused by the fake server", "code": 7}
        if not self._authorized(request):
            return 401, {"error": "missing or wrong credentials", "code": 16}
        path, method = request.path, request.method
        if not path.startswith(PREFIX):
            return 404, {"error": f"no route {path}"}
        path = path[len(PREFIX):]
        if (method, path) == ("GET", "/healthz"):
            return 200, {"commit_sha": "fake", "tag_name": "2.x-fake", "multi_user": False}
        if (method, path) == ("GET", "/pipelines"):
            found = self._filter(self.pipelines.values(), request.query.get("filter"))
            return 200, ({"pipelines": found, "total_size": len(found)} if found else {})
        if (method, path) == ("POST", "/pipelines/upload"):
            name = request.query.get("name") or request.query.get("display_name")
            if any(p["display_name"] == name for p in self.pipelines.values()):
                return 409, {"error": f"pipeline {name!r} already exists"}
            pipeline_id = self._new_id("pipeline")
            pipeline = {"pipeline_id": pipeline_id, "display_name": name,
                        "description": request.query.get("description", "")}
            self.pipelines[pipeline_id] = pipeline
            self.versions[pipeline_id] = [self._version(pipeline_id, name, request)]
            return 200, pipeline
        if (method, path) == ("POST", "/pipelines/upload_version"):
            pipeline_id = request.query.get("pipelineid")
            if pipeline_id not in self.pipelines:
                return 404, {"error": f"no pipeline {pipeline_id}"}
            version = self._version(pipeline_id, request.query.get("name"), request)
            self.versions[pipeline_id].append(version)
            return 200, self._public(version)
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 3 and parts[0] == "pipelines" and parts[2] == "versions":
            versions = self.versions.get(parts[1])
            if versions is None:
                return 404, {"error": f"no pipeline {parts[1]}"}
            ordered = list(reversed(versions)) if "desc" in request.query.get("sort_by", "") else versions
            size = int(request.query.get("page_size") or len(ordered))
            return 200, {"pipeline_versions": [self._public(v) for v in ordered[:size]],
                         "total_size": len(versions)}
        if (method, path) == ("GET", "/experiments"):
            found = self._filter(self.experiments.values(), request.query.get("filter"))
            namespace = request.query.get("namespace")
            if namespace:
                found = [e for e in found if e.get("namespace") == namespace]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if (method, path) == ("POST", "/experiments"):
            body = request.json()
            experiment = {"experiment_id": self._new_id("experiment"),
                          "display_name": body.get("display_name"),
                          "namespace": body.get("namespace") or ""}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if method == "GET" and len(parts) == 2 and parts[0] == "runs":
            run = self.runs.get(parts[1])
            if run is None:
                return 404, {"error": f"no run {parts[1]}"}
            poll = self.run_polls.get(parts[1], 0)
            self.run_polls[parts[1]] = poll + 1
            state, tasks = self.run_states[min(poll, len(self.run_states) - 1)]
            return 200, {**run, "state": state, "run_details": {"task_details": [
                self._task(name, value) for name, value in tasks.items()
            ]}}
        if (method, path) == ("POST", "/runs"):
            body = request.json()
            run = {**body, "run_id": self._new_id("run"), "state": "PENDING"}
            self.runs[run["run_id"]] = run
            return 200, run
        return 404, {"error": f"no route {method} {request.path}"}

    @staticmethod
    def _task(name: str, value) -> dict:
        state, error = value if isinstance(value, tuple) else (value, None)
        task = {"display_name": name, "state": state, "start_time": "2026-01-01T00:00:00Z"}
        if state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
            task["end_time"] = "2026-01-01T00:00:02Z"
        if error:
            task["error"] = {"message": error}
        return task

    def _version(self, pipeline_id: str, name: str | None, request: Request) -> dict:
        version_id = self._new_id("version")
        return {"pipeline_id": pipeline_id, "pipeline_version_id": version_id,
                "display_name": name or version_id,
                "yaml": request.files.get("uploadfile", b"").decode("utf-8")}

    @staticmethod
    def _public(version: dict) -> dict:
        return {key: value for key, value in version.items() if key != "yaml"}

    @staticmethod
    def _filter(items, filter_json: str | None) -> list[dict]:
        """Only the ``display_name EQUALS`` predicate kfp.Client sends."""
        items = list(items)
        if not filter_json:
            return items
        for predicate in json.loads(filter_json).get("predicates", []):
            if predicate.get("key") == "display_name":
                items = [i for i in items if i["display_name"] == predicate.get("stringValue")]
        return items

    # -- HTTP plumbing -----------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    files=_multipart(self.headers.get("Content-Type", ""), body),
                )
                with fake._lock:
                    fake.requests.append(request)
                    status, payload = fake.handle(request)
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *args):  # keep test output clean
                pass

        return Handler


def _multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    if not content_type.startswith("multipart/form-data"):
        return {}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }
