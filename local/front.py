"""The HTTP front: requests on 127.0.0.1 become API Gateway REST proxy events, as deployed.

It runs the REQUEST authorizer first (except on the public OpenAPI route), then the API function,
and answers a refused key with the same problem document the deployed gateway response gives.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.lambda_runtime import Handler, LocalContext

log = logging.getLogger("petrel.local")
PUBLIC_PATHS = frozenset({"/v1/openapi.json"})
UNAUTHORIZED = {
    "type": "urn:petrel:problem:unauthorized",
    "title": "Missing or invalid API key",
    "status": 401,
    "detail": "send a valid API key as `Authorization: Bearer <key>`",
}


class ApiFront:
    def __init__(self, host: str, port: int, authorizer: Handler, api: Handler, stage: str = "api") -> None:
        front = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                front.serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        self._authorizer = authorizer
        self._api = api
        self._stage = stage
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="api-front", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        split = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        headers = {k: v for k, v in request.headers.items()}
        request_id = str(uuid.uuid4())
        context: dict[str, Any] = {"requestId": request_id, "stage": self._stage, "httpMethod": request.command}
        if split.path not in PUBLIC_PATHS:
            auth_event = {
                "type": "REQUEST",
                "methodArn": (
                    f"arn:aws:execute-api:us-east-1:000000000000:local/{self._stage}/{request.command}{split.path}"
                ),
                "resource": "/v1/{proxy+}",
                "path": split.path,
                "httpMethod": request.command,
                "headers": headers,
            }
            try:
                policy = self._authorizer(auth_event, LocalContext("authorizer"))
                allowed = policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
            except Exception:
                allowed = False
            if not allowed:
                self._reply(request, 401, json.dumps(UNAUTHORIZED), {"Content-Type": "application/problem+json"})
                return
            context["authorizer"] = {**policy.get("context", {}), "principalId": policy.get("principalId")}
        event = {
            "resource": "/v1/{proxy+}",
            "path": split.path,
            "httpMethod": request.command,
            "headers": headers,
            "queryStringParameters": dict(parse_qsl(split.query)) or None,
            "pathParameters": {"proxy": split.path.removeprefix("/v1/")},
            "body": body.decode("utf-8", "replace") if body else None,
            "isBase64Encoded": False,
            "requestContext": context,
        }
        result = self._api(event, LocalContext("api"))
        self._reply(request, int(result["statusCode"]), result.get("body") or "", result.get("headers") or {})

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, body: str, headers: dict[str, str]) -> None:
        payload = body.encode("utf-8")
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)
