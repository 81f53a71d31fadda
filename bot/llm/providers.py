"""Provider-neutral messages and tools, and the two adapters that put them on Anthropic's and OpenAI's wire.

An adapter sends one request through the official SDK, with the SDK's own retries off
(`max_retries=0`), and returns one completion or a classified `ProviderError`: retrying, fallback,
budgets and validation live in one place, the router in `bot.llm`, which re-exports the public names.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the SDKs are imported on first use: a dispatch lane or web process never pays their second
    import anthropic
    import openai

# Statuses worth another try: timeouts, lock conflicts, rate limits, server errors, Anthropic's 529 "overloaded".
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
_DETAIL_LIMIT = 300
_REASONING_MODEL = re.compile(r"o\d|gpt-5")


# A message is one of:
#   {"role": "user", "content": str}
#   {"role": "assistant", "content": str, "tool_calls": [{"id": str, "name": str, "input": dict}]}   (tool_calls optional)
#   {"role": "tool", "tool_call_id": str, "content": str, "is_error": bool}                          (is_error optional)
# Build them with `user_message`, `LLMResponse.to_message` and `tool_result`.
Message = dict[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call; `input_schema` is the JSON Schema its input must pass."""

    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A validated tool call: `input` passed the tool's schema."""

    id: str
    name: str
    input: dict[str, Any]


def user_message(text: str) -> Message:
    return {"role": "user", "content": text}


def tool_result(call_id: str, content: str, *, is_error: bool = False) -> Message:
    """The answer to one tool call (a `read_file` result, an error), fed back to the model."""
    return {"role": "tool", "tool_call_id": call_id, "content": content, "is_error": is_error}


def check_message(index: int, message: Message) -> None:
    """Catch a malformed neutral message here, not as a provider's 400."""
    role = message.get("role")
    if role not in ("user", "assistant", "tool") or not isinstance(message.get("content", ""), str):
        raise ValueError(f"messages[{index}] must have role user, assistant or tool and text content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise ValueError(f"messages[{index}] is a tool result without a tool_call_id")
    for call in message.get("tool_calls", []):
        if (
            role != "assistant"
            or not isinstance(call, dict)
            or not isinstance(call.get("input"), dict)
            or not call.get("id")
            or not call.get("name")
        ):
            raise ValueError(f"messages[{index}] has a malformed tool call")


class LLMError(Exception):
    """The model could not give a usable answer; the message says why and never holds a secret."""


class LLMUnavailable(LLMError):
    """Every model failed on transient trouble (rate limits, overload, network) after retries: try later."""


@dataclass(frozen=True)
class ProviderRequest:
    """One request as the router prepared it: redacted, checked for secrets, provider-neutral."""

    model: str
    system: str
    messages: list[Message]
    tools: list[ToolSpec]
    max_tokens: int
    require_tool: bool


@dataclass(frozen=True)
class RawToolCall:
    """A tool call as the model sent it; `problem` says why its input could not be read (OpenAI's JSON string)."""

    id: str
    name: str
    input: dict[str, Any]
    problem: str | None = None


@dataclass(frozen=True)
class Completion:
    """What came back from one successful HTTP call, before validation."""

    text: str
    tool_calls: list[RawToolCall]
    stop_reason: str
    input_tokens: int
    output_tokens: int


class ProviderError(Exception):
    """A failed call, classified: `retryable` for rate limits, overload, 5xx and network trouble."""

    def __init__(self, message: str, *, status: int | None, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


class Provider(Protocol):
    name: str

    async def complete(self, request: ProviderRequest) -> Completion: ...

    async def aclose(self) -> None: ...


class _SDKProvider:
    """One SDK client per event loop: clients pool connections bound to a loop, and each worker job may run a new one."""

    name = ""

    def __init__(self, *, api_key: str, base_url: str | None, timeout_s: float) -> None:
        self._api_key = api_key
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._new_client()
        return client

    def _new_client(self) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close this loop's client (its pooled connections)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()


class AnthropicProvider(_SDKProvider):
    """Anthropic's Messages API (`POST {base_url}/v1/messages`)."""

    name = "anthropic"

    def _new_client(self) -> anthropic.AsyncAnthropic:
        import anthropic

        # max_retries=0: the router retries, with the fallback model and the budget in view.
        return anthropic.AsyncAnthropic(
            api_key=self._api_key, base_url=self._base_url, max_retries=0, timeout=self._timeout_s
        )

    async def complete(self, request: ProviderRequest) -> Completion:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": anthropic_messages(request.messages),
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in request.tools
            ]
            kwargs["tool_choice"] = {"type": "any" if request.require_tool else "auto"}
        import anthropic

        try:
            message = await self._client().messages.create(**kwargs)
        # `from None`: the SDK's exception holds the request, auth header included; keep it out of tracebacks.
        except anthropic.APIStatusError as exc:
            raise status_error(exc.status_code, exc.response.headers, exc.body) from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError(f"connection failed: {type(exc).__name__}", status=None, retryable=True) from None
        except anthropic.APIError as exc:
            raise ProviderError(f"unusable response: {type(exc).__name__}", status=None, retryable=False) from None
        text: list[str] = []
        calls: list[RawToolCall] = []
        for block in message.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                data = block.input if isinstance(block.input, dict) else {}
                problem = None if isinstance(block.input, dict) else "the tool input is not a JSON object"
                calls.append(RawToolCall(id=block.id, name=block.name, input=dict(data), problem=problem))
        usage = message.usage
        input_tokens = (
            usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        )
        return Completion(
            text="".join(text),
            tool_calls=calls,
            stop_reason=_ANTHROPIC_STOP.get(message.stop_reason or "", message.stop_reason or "unknown"),
            input_tokens=input_tokens,
            output_tokens=usage.output_tokens,
        )


class OpenAIProvider(_SDKProvider):
    """OpenAI Chat Completions (`POST {base_url}/chat/completions`), or any server that speaks it."""

    name = "openai"

    def _new_client(self) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(
            api_key=self._api_key, base_url=self._base_url, max_retries=0, timeout=self._timeout_s
        )

    async def complete(self, request: ProviderRequest) -> Completion:
        kwargs: dict[str, Any] = {"model": request.model, "messages": openai_messages(request.system, request.messages)}
        # OpenAI's reasoning models refuse `max_tokens`; the compatible servers people point OPENAI_BASE_URL
        # at (vLLM, Ollama, llama.cpp) know only `max_tokens`, which OpenAI's other models still accept.
        limit = "max_completion_tokens" if _REASONING_MODEL.match(request.model) else "max_tokens"
        kwargs[limit] = request.max_tokens
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                }
                for t in request.tools
            ]
            kwargs["tool_choice"] = "required" if request.require_tool else "auto"
        import openai

        try:
            completion = await self._client().chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            raise status_error(exc.status_code, exc.response.headers, exc.body) from None
        except openai.APIConnectionError as exc:
            raise ProviderError(f"connection failed: {type(exc).__name__}", status=None, retryable=True) from None
        except openai.APIError as exc:
            raise ProviderError(f"unusable response: {type(exc).__name__}", status=None, retryable=False) from None
        if not completion.choices:
            raise ProviderError("the response has no choices", status=None, retryable=True)
        choice = completion.choices[0]
        calls = [_openai_tool_call(call) for call in choice.message.tool_calls or []]
        usage = completion.usage
        return Completion(
            text=choice.message.content or "",
            tool_calls=calls,
            stop_reason=_OPENAI_STOP.get(choice.finish_reason or "", choice.finish_reason or "unknown"),
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )


# Stop reasons in one vocabulary (Anthropic's), whichever provider answered.
_ANTHROPIC_STOP = {"end_turn": "end_turn", "tool_use": "tool_use", "max_tokens": "max_tokens", "refusal": "refusal"}
_OPENAI_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens", "content_filter": "refusal"}


def anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Anthropic turns: tool results ride in the next user turn, ahead of its text."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.get("content"):
                blocks.append({"type": "text", "text": message["content"]})
            blocks += [
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["input"]}
                for c in message.get("tool_calls", [])
            ]
            if blocks:  # an empty assistant turn is refused by the API and says nothing
                turns.append({"role": "assistant", "content": blocks})
            continue
        if message["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": message["content"]}
            if message.get("is_error"):
                block["is_error"] = True
        else:
            block = {"type": "text", "text": message["content"]}
        if not turns or turns[-1]["role"] != "user":
            turns.append({"role": "user", "content": []})
        turns[-1]["content"].append(block)
    for turn in turns:
        if turn["role"] == "user":
            # Anthropic requires tool_result blocks first in a user turn; sorted() is stable.
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return turns


def openai_messages(system: str, messages: list[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Chat Completions messages, the system prompt first."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        if message["role"] == "assistant":
            if not message.get("content") and not message.get("tool_calls"):
                continue  # an empty assistant turn is refused by the API and says nothing
            entry: dict[str, Any] = {"role": "assistant", "content": message.get("content") or None}
            if message.get("tool_calls"):
                entry["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["input"], ensure_ascii=False)},
                    }
                    for c in message["tool_calls"]
                ]
            out.append(entry)
        elif message["role"] == "tool":
            prefix = "Error: " if message.get("is_error") else ""
            out.append(
                {"role": "tool", "tool_call_id": message["tool_call_id"], "content": prefix + message["content"]}
            )
        else:
            out.append({"role": "user", "content": message["content"]})
    return out


def _openai_tool_call(call: Any) -> RawToolCall:
    function = getattr(call, "function", None)
    if call.type != "function" or function is None:
        return RawToolCall(id=call.id, name=str(getattr(call, "name", "")), input={}, problem="not a function call")
    try:
        data = json.loads(function.arguments or "{}")
    except json.JSONDecodeError as exc:
        return RawToolCall(
            id=call.id, name=function.name, input={}, problem=f"the arguments are not valid JSON ({exc})"
        )
    if not isinstance(data, dict):
        return RawToolCall(id=call.id, name=function.name, input={}, problem="the arguments are not a JSON object")
    return RawToolCall(id=call.id, name=function.name, input=data)


def status_error(status: int, headers: Mapping[str, str], body: object) -> ProviderError:
    """Classify an HTTP error like the SDKs would: retryable statuses, `x-should-retry`, `retry-after`."""
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    return ProviderError(
        f"HTTP {status}{_error_detail(body)}", status=status, retryable=retryable, retry_after=retry_after_s(headers)
    )


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, `retry-after` as seconds or as an HTTP date."""
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None


def _error_detail(body: object) -> str:
    """`: <type>: <message>` from either provider's error body, short; the router redacts it before use."""
    error = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ""
    parts = [str(error[k]) for k in ("type", "message") if isinstance(error.get(k), str) and error[k]]
    detail = ": ".join(parts)
    return f" ({detail[:_DETAIL_LIMIT]})" if detail else ""
