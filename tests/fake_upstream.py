"""A local stand-in for a paid OpenAI-compatible upstream (the only fake the project allows).

It speaks OpenAI's wire format as api.openai.com does: chat completions (a JSON answer with its
`usage` object, or — with `stream: true` — server-sent events over chunked HTTP/1.1, one chunk per
word, `"usage": null` on each chunk when `stream_options.include_usage` is set, then a final chunk
with empty `choices` and the usage, then `data: [DONE]`) and embeddings.

Its answers are deterministic, so tests know the usage to expect: prompt_tokens = 10 + the number
of whitespace-separated words in the messages (or inputs), completion_tokens = the number of words
answered (5, or `words:N`). Directives in the last message (or input) make it misbehave:
`fail:500`, `fail:429` (with Retry-After: 7), `stall:S` (S seconds before answering), `cut:N`
(close the connection after N words, mid-stream, without the usage chunk), `nousage` (finish
the stream normally but without the usage chunk), `delay:MS` (between streamed words).

Every request is recorded (path, headers, JSON body) in `FakeUpstream.requests`.

Run alone (for the benchmark or by hand): python tests/fake_upstream.py --port 8799
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-fake-upstream-secret"
CREATED = 1_764_547_200
FINGERPRINT = "fp_fake0001"
_DIRECTIVE = re.compile(r"\b(fail|stall|cut|words|delay):(\d+)\b|\bnousage\b")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    """The server, on 127.0.0.1 and a free port, serving from a daemon thread."""

    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeUpstream:
        upstream = self

        class Handler(_Handler):
            fake = upstream

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 512
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def record(self, item: Recorded) -> None:
        self.requests.append(item)  # list.append is atomic under the GIL


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: with Nagle on, the second waits for the peer's
    # delayed ACK (~40 ms), which real upstreams do not make anyone wait.
    disable_nagle_algorithm = True
    fake: FakeUpstream

    def handle(self) -> None:
        # A caller that gave up (a stall, a client gone) is not the upstream's failure.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: tests read failures from assertions, not from a request log

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            self._json(400, _error("invalid_request_error", "could not parse the JSON body"))
            return
        self.fake.record(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.headers.get("authorization") != f"Bearer {API_KEY}":
            self._json(401, _error("invalid_request_error", "Incorrect API key provided."))
            return
        if self.path == "/v1/chat/completions":
            messages = body.get("messages") or []
            words = sum(len(_text_of(m.get("content")).split()) for m in messages)
            last = _text_of(messages[-1].get("content")) if messages else ""
            self._chat(body, 10 + words, _directives(last))
        elif self.path == "/v1/embeddings":
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            text = " ".join(i if isinstance(i, str) else "" for i in items)
            directives = _directives(text)
            if self._misbehave(directives):
                return
            self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": i, "embedding": [0.0125, -0.5, 0.25, 1.0]}
                        for i in range(len(items))
                    ],
                    "model": body.get("model"),
                    "usage": {
                        "prompt_tokens": 10 + len(text.split()),
                        "total_tokens": 10 + len(text.split()),
                    },
                },
            )
        else:
            self._json(404, _error("invalid_request_error", f"Unknown path {self.path}"))

    def _misbehave(self, d: dict[str, int]) -> bool:
        if "stall" in d:
            time.sleep(d["stall"])
        if "fail" in d:
            status = d["fail"]
            kind = "rate_limit_exceeded" if status == 429 else "server_error"
            extra = {"retry-after": "7"} if status == 429 else {}
            self._json(
                status, _error(kind, f"The fake upstream was told to fail with {status}."), extra
            )
            return True
        return False

    def _chat(self, body: dict[str, Any], prompt_tokens: int, d: dict[str, int]) -> None:
        if self._misbehave(d):
            return
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 10**9
        words = [f"word{i}" for i in range(min(d.get("words", 5), max_tokens))]
        model = body.get("model")
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        completion_id = f"chatcmpl-fake{threading.get_ident():x}{time.monotonic_ns():x}"
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": " ".join(words),
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "service_tier": "default",
                    "system_fingerprint": FINGERPRINT,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                out["usage"] = None
            return out

        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        self._event(chunk({"role": "assistant", "content": "", "refusal": None}, None))
        for i, word in enumerate(words):
            if "cut" in d and i >= d["cut"]:
                self.wfile.flush()
                self.close_connection = True
                # No terminating chunk: the client sees the body end mid-transfer.
                self.connection.shutdown(2)
                return
            if d.get("delay"):
                time.sleep(d["delay"] / 1000)
            self._event(chunk({"content": word if i == 0 else f" {word}"}, None))
        self._event(chunk({}, "stop"))
        if include_usage and "nousage" not in d:
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = usage
            self._event(final)
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + _dumps(payload) + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = _dumps(payload)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def _directives(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for match in _DIRECTIVE.finditer(text):
        if match.group(0) == "nousage":
            found["nousage"] = 1
        else:
            found[match.group(1)] = int(match.group(2))
    return found


def _error(code: str, message: str) -> dict[str, Any]:
    kind = "requests" if code == "rate_limit_exceeded" else "server_error"
    if code == "invalid_request_error":
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    server = FakeUpstream(port=args.port).start()
    print(f"fake upstream at {server.base_url} (API key {API_KEY})", flush=True)
    threading.Event().wait()
