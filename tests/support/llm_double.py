"""Real HTTP servers on 127.0.0.1 that speak Anthropic's Messages API and OpenAI's Chat Completions.

The router under test reaches them through the official SDKs, over real sockets, by base URL
(`ANTHROPIC_BASE_URL`-style for Anthropic, `OPENAI_BASE_URL`-style, ending in `/v1`, for OpenAI).
Each double answers from a script, in order, and records every request:

    with AnthropicDouble() as claude:
        claude.rate_limited(retry_after=7).tool_call("submit_plan", {"goal": "x", "steps": []})
        ...  # LLM(anthropic_base_url=claude.base_url, anthropic_api_key=claude.api_key, ...)
        assert [r.model for r in claude.requests] == ["claude-sonnet-4-5"] * 2

Requests are checked the way the provider checks them (key, path, tool-use/tool-result pairing, tool
names); anything off is answered 400 and recorded in `violations`, and leaving the `with` block
raises if there were any. An unscripted request is a violation too.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["AnthropicDouble", "LLMDouble", "OpenAIDouble", "Reply", "Request"]

_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@dataclass(frozen=True)
class Request:
    """One request as the double received it; header names are lower case."""

    path: str
    headers: dict[str, str]
    json: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.json.get("model"))

    @property
    def text(self) -> str:
        """The whole body as text, for "this never reached the provider" assertions."""
        return json.dumps(self.json, ensure_ascii=False)


@dataclass
class Reply:
    """A scripted answer: `status` 0 drops the connection without answering."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Answer:
    """A successful completion to render in the provider's format; `input` may be raw argument text (OpenAI)."""

    text: str
    calls: list[tuple[str, dict[str, Any] | str]]
    input_tokens: int
    output_tokens: int
    stop_reason: str | None


class LLMDouble:
    """What both doubles share: the server thread, the script, the record, the violations."""

    provider = ""
    path = ""

    def __init__(self, *, api_key: str = "test-llm-key-0123456789") -> None:
        self.api_key = api_key
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self._script: deque[Reply | _Answer] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def origin(self) -> str:
        if self._server is None:
            raise RuntimeError("the double is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """What the provider's `*_BASE_URL` variable would hold."""
        return self.origin

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.stop()
        if exc_type is None and self.violations:
            raise AssertionError(f"{self.provider} double saw bad requests:\n" + "\n".join(self.violations))

    # ------------------------------------------------------------------ scripting

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        return len(self._script)

    def reply(self, reply: Reply) -> Self:
        self._script.append(reply)
        return self

    def tool_call(
        self,
        name: str,
        input: dict[str, Any] | str,
        *,
        text: str = "",
        input_tokens: int = 1000,
        output_tokens: int = 500,
    ) -> Self:
        """Answer with one tool call; for OpenAI `input` may be the raw `arguments` string (even broken JSON)."""
        return self.tool_calls([(name, input)], text=text, input_tokens=input_tokens, output_tokens=output_tokens)

    def tool_calls(
        self,
        calls: list[tuple[str, dict[str, Any] | str]],
        *,
        text: str = "",
        input_tokens: int = 1000,
        output_tokens: int = 500,
    ) -> Self:
        self._script.append(_Answer(text, list(calls), input_tokens, output_tokens, None))
        return self

    def text(
        self, text: str, *, input_tokens: int = 1000, output_tokens: int = 500, stop_reason: str | None = None
    ) -> Self:
        self._script.append(_Answer(text, [], input_tokens, output_tokens, stop_reason))
        return self

    def error(self, status: int, message: str = "", *, headers: dict[str, str] | None = None) -> Self:
        return self.reply(Reply(status, self.error_body(status, message or f"scripted {status}"), headers or {}))

    def rate_limited(self, *, retry_after: float | None = None) -> Self:
        headers = {"retry-after": _number(retry_after)} if retry_after is not None else {}
        return self.error(429, "Rate limit exceeded", headers=headers)

    def server_error(self) -> Self:
        return self.error(500, "Internal server error")

    def disconnect(self) -> Self:
        """Drop the connection without an answer (the SDK sees a connection error)."""
        return self.reply(Reply(0))

    # ------------------------------------------------------------------ provider specifics

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, request: Request) -> list[str]:
        raise NotImplementedError

    def render(self, answer: _Answer, request: Request) -> dict[str, Any]:
        raise NotImplementedError

    def next_id(self) -> int:
        return next(self._ids)

    # ------------------------------------------------------------------ serving

    def answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            problems = self.check(request)
            if not problems and not self._script:
                problems = ["no scripted reply left for this request"]
            if problems:
                self.violations += [f"{request.path}: {p}" for p in problems]
                return Reply(400, self.error_body(400, "; ".join(problems)))
            scripted = self._script.popleft()
        if isinstance(scripted, Reply):
            return scripted
        return Reply(200, self.render(scripted, request))


class AnthropicDouble(LLMDouble):
    """`POST /v1/messages`, Anthropic's wire format; 529 is its "overloaded"."""

    provider = "anthropic"
    path = "/v1/messages"

    def overloaded(self, times: int = 1) -> Self:
        for _ in range(times):
            self.error(529, "Overloaded")
        return self

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}  # fmt: skip
        return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}

    def check(self, request: Request) -> list[str]:
        problems: list[str] = []
        headers, body = request.headers, request.json
        if headers.get("x-api-key") != self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            problems.append("missing or wrong API key")
        if "anthropic-version" not in headers:
            problems.append("no anthropic-version header")
        if not isinstance(body.get("model"), str) or not isinstance(body.get("max_tokens"), int):
            problems.append("model and max_tokens are required")
        tools = body.get("tools") or []
        for tool in tools:
            if not _TOOL_NAME.fullmatch(str(tool.get("name"))) or tool.get("input_schema", {}).get("type") != "object":
                problems.append(f"bad tool definition {tool.get('name')!r}")
        if "tool_choice" in body and not tools:
            problems.append("tool_choice without tools")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or messages[0].get("role") != "user":
            return [*problems, "messages must be a non-empty list starting with a user turn"]
        pending: set[str] = set()
        for index, message in enumerate(messages):
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            if message.get("role") == "user":
                results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
                if pending != set(results):
                    problems.append(
                        f"messages[{index}]: tool_use ids {sorted(pending)} need tool_result blocks right after"
                    )
                if [b.get("type") for b in blocks][: len(results)] != ["tool_result"] * len(results):
                    problems.append(f"messages[{index}]: tool_result blocks must come first")
                pending = set()
            elif message.get("role") == "assistant":
                if pending:
                    problems.append(f"messages[{index}]: tool_use ids {sorted(pending)} were never answered")
                pending = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
            else:
                problems.append(f"messages[{index}]: unknown role {message.get('role')!r}")
            if any(b.get("type") == "text" and not b.get("text") for b in blocks):
                problems.append(f"messages[{index}]: text content blocks must be non-empty")
        return problems

    def render(self, answer: _Answer, request: Request) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}] if answer.text else []
        for name, data in answer.calls:
            content.append({"type": "tool_use", "id": f"toolu_{self.next_id():04d}", "name": name, "input": data})
        return {
            "id": f"msg_{self.next_id():04d}",
            "type": "message",
            "role": "assistant",
            "model": request.model,
            "content": content,
            "stop_reason": answer.stop_reason or ("tool_use" if answer.calls else "end_turn"),
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens},
        }


class OpenAIDouble(LLMDouble):
    """`POST /v1/chat/completions`, OpenAI's wire format (what compatible local servers speak too)."""

    provider = "openai"
    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kinds = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}
        return {"error": {"message": message, "type": kinds.get(status, "server_error"), "param": None, "code": None}}

    def check(self, request: Request) -> list[str]:
        problems: list[str] = []
        body = request.json
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            problems.append("missing or wrong API key")
        if not isinstance(body.get("model"), str):
            problems.append("model is required")
        tools = body.get("tools") or []
        for tool in tools:
            function = tool.get("function", {})
            if tool.get("type") != "function" or not _TOOL_NAME.fullmatch(str(function.get("name"))):
                problems.append(f"bad tool definition {function.get('name')!r}")
        if "tool_choice" in body and not tools:
            problems.append("tool_choice without tools")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return [*problems, "messages must be a non-empty list"]
        pending: set[str] = set()
        for index, message in enumerate(messages):
            role = message.get("role")
            if role == "tool":
                if message.get("tool_call_id") not in pending:
                    problems.append(f"messages[{index}]: tool message answers no pending tool call")
                pending.discard(message.get("tool_call_id"))
                continue
            if pending:
                problems.append(f"messages[{index}]: tool calls {sorted(pending)} must be answered by tool messages")
            if role == "assistant":
                calls = message.get("tool_calls") or []
                pending = {c.get("id") for c in calls}
                for call in calls:
                    if not isinstance(call.get("function", {}).get("arguments"), str):
                        problems.append(f"messages[{index}]: tool call arguments must be a JSON string")
            elif role in ("system", "user"):
                pending = set()
            else:
                problems.append(f"messages[{index}]: unknown role {role!r}")
        return problems

    def render(self, answer: _Answer, request: Request) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
        if answer.calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{self.next_id():04d}",
                    "type": "function",
                    "function": {"name": name, "arguments": data if isinstance(data, str) else json.dumps(data)},
                }
                for name, data in answer.calls
            ]
        finish = {"max_tokens": "length"}.get(answer.stop_reason or "", answer.stop_reason)
        return {
            "id": f"chatcmpl-{self.next_id():04d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish or ("tool_calls" if answer.calls else "stop")}
            ],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
            },
        }


class LocalServerDouble(OpenAIDouble):
    """An OpenAI-compatible local server (Ollama, vLLM, llama.cpp) as nofx meets it: any API key will do, only
    `max_tokens` is known, and `tool_choice` is read but ignored, so the script decides whether a turn answers
    with a tool call (in the plain OpenAI format) or with text. `tool_choices` records what nofx asked for."""

    def __init__(self, *, api_key: str = "ollama") -> None:
        super().__init__(api_key=api_key)
        self.tool_choices: list[object] = []

    def check(self, request: Request) -> list[str]:
        problems = [p for p in super().check(request) if p != "missing or wrong API key"]
        if "max_completion_tokens" in request.json:
            problems.append("local servers know max_tokens, not max_completion_tokens")
        if request.json.get("tools"):
            self.tool_choices.append(request.json.get("tool_choice"))
        return problems


def _handler_for(double: LLMDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
        disable_nagle_algorithm = True  # headers and body go out as separate writes; no 40 ms delayed-ACK stall

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            if path != double.path:
                self._send(Reply(404, double.error_body(404, f"no route {path}")))
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(Reply(400, double.error_body(400, "the body is not JSON")))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(double.answer(Request(path, headers, body if isinstance(body, dict) else {})))

        def _send(self, reply: Reply) -> None:
            if reply.status == 0:
                self.close_connection = True
                return
            data = json.dumps(reply.body or {}).encode()
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_{double.next_id():04d}")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
