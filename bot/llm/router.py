"""The one way nofx talks to a model: retries, a fallback model, costs against a budget, a cache, validated tool calls.

Structured output is only ever a tool call whose input passed its JSON schema; anything else is sent
back to the model to correct (a bounded number of times) and never returned. Prompts are redacted
and checked for secrets before they leave the process; user text goes in `untrusted()` fences.

Messages are provider-neutral dicts (see `Message`); `bot.llm.providers` turns them into each wire format.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.llm.costs import (
    CACHE_FORMAT,
    PRICES,
    Budget,
    BudgetExceeded,
    FileCache,
    Price,
    ResponseCache,
    Usage,
    cache_key,
    cost_usd,
    price_for,
)
from bot.llm.prompt_safety import prepare_prompt, untrusted
from bot.llm.providers import (
    AnthropicProvider,
    Completion,
    LLMError,
    LLMUnavailable,
    Message,
    OpenAIProvider,
    Provider,
    ProviderError,
    ProviderRequest,
    RawToolCall,
    ToolCall,
    ToolSpec,
    check_message,
    tool_result,
    user_message,
)
from bot.llm.tool_calls import review_calls, validators_for
from bot.logs import fields
from bot.settings import SettingsError

if TYPE_CHECKING:
    from bot.settings import Settings

__all__ = [
    "LLM",
    "Budget",
    "BudgetExceeded",
    "FileCache",
    "LLMError",
    "LLMResponse",
    "LLMUnavailable",
    "Message",
    "ResponseCache",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "tool_result",
    "untrusted",
    "user_message",
]

log = logging.getLogger(__name__)

PROVIDERS = ("anthropic", "openai")
# claude-sonnet-4-5 (the example in DESIGN.md) reaches end of life on 2026-11-30; its successor is priced the same.
DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1"}
# The smaller sibling usually has capacity when the main model is overloaded.
FALLBACK_MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-4.1-mini"}
_KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}

_MAX_CORRECTIONS = 2


@dataclass(frozen=True)
class LLMResponse:
    """A model's answer: text, validated tool calls, usage, and the stop reason in Anthropic's vocabulary."""

    text: str
    tool_calls: list[ToolCall]
    usage: Usage
    stop_reason: str

    def to_message(self) -> Message:
        """The assistant turn to put back into `messages` before answering its tool calls."""
        message: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [asdict(call) for call in self.tool_calls]
        return message


@dataclass(frozen=True)
class _Route:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


def parse_model(spec: str, default_provider: str) -> _Route:
    """`provider:model`, or a bare model name on `default_provider` (model names may hold colons: `llama3:8b`)."""
    provider, sep, model = spec.partition(":")
    if sep and provider in PROVIDERS and model:
        return _Route(provider, model)
    return _Route(default_provider, spec)


def identity(text: str) -> str:
    return text


class LLM:
    """The router every LLM call goes through (planner, codegen, review)."""

    def __init__(
        self,
        *,
        default_model: str,
        fallback_model: str | None,
        anthropic_api_key: str | None,
        anthropic_base_url: str | None,
        openai_api_key: str | None,
        openai_base_url: str | None,
        cache: ResponseCache | None,
        redact: Callable[[str], str] = identity,
        secrets: Iterable[str] = (),
        max_attempts: int = 4,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_usage: Callable[[Usage, str], None] | None = None,
        timeout_s: float = 300.0,
        prices: Mapping[str, Price] = PRICES,
        base_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        max_retry_after_s: float = 60.0,
    ) -> None:
        self._providers: dict[str, Provider] = {}
        if anthropic_api_key:
            self._providers["anthropic"] = AnthropicProvider(
                api_key=anthropic_api_key, base_url=anthropic_base_url, timeout_s=timeout_s
            )
        if openai_api_key:
            self._providers["openai"] = OpenAIProvider(
                api_key=openai_api_key, base_url=openai_base_url, timeout_s=timeout_s
            )
        if not self._providers:
            raise ValueError("an LLM needs at least one provider key")
        first = next(iter(self._providers))
        self.default_model = parse_model(default_model, first)
        self.fallback_model = parse_model(fallback_model, self.default_model.provider) if fallback_model else None
        self._need_provider(self.default_model)
        self._cache = cache
        self._redact = redact
        self._secrets = [s for s in secrets if s and len(s) >= 6]
        self.max_attempts = max(1, max_attempts)
        self._sleep = sleep
        self._on_usage = on_usage
        self._prices = prices
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._max_retry_after_s = max_retry_after_s
        self._random = random.Random()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        cache: ResponseCache | None,
        redact: Callable[[str], str] = identity,
        on_usage: Callable[[Usage, str], None] | None = None,
    ) -> LLM | None:
        """The server's router, or None when no provider key is configured (LLM steps then say so)."""
        keys = {"anthropic": settings.anthropic_api_key, "openai": settings.openai_api_key}
        if not any(keys.values()):
            return None
        if settings.model:
            provider, sep, model = settings.model.partition(":")
            if not sep or provider not in PROVIDERS or not model:
                raise SettingsError(
                    f"NOFX_MODEL must be provider:model with provider anthropic or openai, got {settings.model!r}"
                )
            if not keys[provider]:
                raise SettingsError(f"NOFX_MODEL names {provider}, but {_KEY_VARIABLES[provider]} is not set")
            fallback = _fallback_for(provider, model)
        else:
            provider = "anthropic" if keys["anthropic"] else "openai"
            model = DEFAULT_MODELS[provider]
            fallback = FALLBACK_MODELS[provider]
        return cls(
            default_model=f"{provider}:{model}",
            fallback_model=f"{provider}:{fallback}" if fallback else None,
            anthropic_api_key=settings.anthropic_api_key,
            anthropic_base_url=settings.anthropic_base_url,
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            cache=cache,
            redact=redact,
            secrets=settings.secrets,
            on_usage=on_usage,
        )

    async def call(
        self,
        *,
        purpose: str,
        system: str,
        messages: list[Message],
        tools: list[ToolSpec],
        model: str | None = None,
        max_tokens: int = 4096,
        budget: Budget | None = None,
        require_tool: bool = True,
        cache_key_extra: str = "",
    ) -> LLMResponse:
        """Ask the model; return only tool calls that passed their schemas. `model` is `provider:model`."""
        routes = self._routes(model)
        route = routes[0]
        if require_tool and not tools:
            raise ValueError("require_tool needs at least one tool")
        validators = validators_for(tools)
        for index, message in enumerate(messages):
            check_message(index, message)
        system, conversation = prepare_prompt(system, messages, tools, redact=self._redact, secrets=self._secrets)
        key = cache_key(
            route.provider, route.model, system, conversation, tools, max_tokens, require_tool, cache_key_extra
        )

        if self._cache is not None and (hit := self._cached(key, validators, require_tool)) is not None:
            self._record(hit.usage, purpose, attempt=0, round_=0)
            return hit

        request = ProviderRequest(route.model, system, conversation, tools, max_tokens, require_tool)
        spent: list[Usage] = []
        problems: list[str] = []
        for round_ in range(1, _MAX_CORRECTIONS + 2):
            completion, usage = await self._complete(routes, request, budget, purpose, round_)
            spent.append(usage)
            # Corrections go to the model that answered, not back to one that was failing.
            routes = [r for r in routes if (r.provider, r.model) == (usage.provider, usage.model)]
            calls, problems, feedback = review_calls(completion, validators, require_tool)
            if not problems:
                response = LLMResponse(completion.text, calls, _total(spent), completion.stop_reason)
                self._store(key, response)
                return response
            log.warning("llm output invalid, asking for a correction", extra=fields(purpose=purpose, round=round_))
            _, conversation = prepare_prompt("", feedback, [], redact=self._redact, secrets=self._secrets)
            request = replace(request, messages=request.messages + conversation)
        found = self._redact("; ".join(problems))[:1000]
        raise LLMError(f"the model's tool calls for {purpose} were still invalid after {round_} tries: {found}")

    def _routes(self, model: str | None) -> list[_Route]:
        """The requested model, then its fallback: the configured one when it is on the same provider."""
        route = parse_model(model, self.default_model.provider) if model else self.default_model
        self._need_provider(route)
        fallback = self.fallback_model
        if route != self.default_model and (fallback is None or fallback.provider != route.provider):
            name = _fallback_for(route.provider, route.model)
            fallback = _Route(route.provider, name) if name else None
        return [route, fallback] if fallback is not None and fallback != route else [route]

    async def aclose(self) -> None:
        """Close the SDK clients this event loop opened; call before the loop ends (tests, job exits)."""
        for provider in self._providers.values():
            await provider.aclose()

    # ------------------------------------------------------------------ sending

    async def _complete(
        self, routes: list[_Route], request: ProviderRequest, budget: Budget | None, purpose: str, round_: int
    ) -> tuple[Completion, Usage]:
        """One answer from the first model that gives one: backoff on transient errors, then the fallback."""
        failures: list[str] = []
        transient = False
        for route in routes:
            provider = self._providers[route.provider]
            for attempt in range(1, self.max_attempts + 1):
                if budget is not None:
                    budget.check()
                try:
                    completion = await provider.complete(replace(request, model=route.model))
                except ProviderError as exc:
                    detail = self._redact(str(exc))
                    delay = self._delay(attempt, exc) if exc.retryable else None
                    log.warning(
                        "llm call failed",
                        extra=fields(
                            provider=route.provider,
                            model=route.model,
                            purpose=purpose,
                            attempt=attempt,
                            status=exc.status,
                            retryable=exc.retryable,
                            error=detail,
                        ),
                    )
                    if delay is None:
                        transient = transient or exc.retryable
                        failures.append(f"{route}: {detail} after {attempt} attempt{'s' if attempt > 1 else ''}")
                        break
                    await self._sleep(delay)
                    continue
                usage = self._usage(route, completion)
                if budget is not None:
                    budget.charge(usage.cost_usd)
                self._record(usage, purpose, attempt=attempt, round_=round_)
                return completion, usage
        summary = "; ".join(failures)
        if transient:
            raise LLMUnavailable(f"no model answered for {purpose}: {summary}. Try again later.")
        raise LLMError(f"the model request for {purpose} was refused: {summary}")

    def _delay(self, attempt: int, exc: ProviderError) -> float | None:
        """Seconds before the next attempt, or None to stop: attempts used up, or a wait longer than we accept."""
        if attempt >= self.max_attempts:
            return None
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= self._max_retry_after_s else None
        backoff = min(self._max_delay_s, self._base_delay_s * 2.0 ** (attempt - 1))
        return backoff * (0.5 + self._random.random() / 2)

    def _usage(self, route: _Route, completion: Completion) -> Usage:
        cost, known = cost_usd(route.model, completion.input_tokens, completion.output_tokens, self._prices)
        return Usage(
            provider=route.provider,
            model=route.model,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost_usd=round(cost, 6),
            cached=False,
            price_known=known,
        )

    def _record(self, usage: Usage, purpose: str, *, attempt: int, round_: int) -> None:
        """The one log line per call (never prompt text), and the caller's accounting hook."""
        log.info(
            "llm call",
            extra=fields(
                provider=usage.provider,
                model=usage.model,
                purpose=purpose,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_usd=usage.cost_usd,
                price_known=usage.price_known,
                attempt=attempt,
                round=round_,
                cached=usage.cached,
            ),
        )
        if self._on_usage is not None:
            self._on_usage(usage, purpose)

    def _need_provider(self, route: _Route) -> None:
        if route.provider not in PROVIDERS:
            raise LLMError(f"unknown model provider {route.provider!r}: use anthropic or openai")
        if route.provider not in self._providers:
            raise LLMError(f"the model {route} needs {_KEY_VARIABLES[route.provider]}, which this server does not have")

    # ------------------------------------------------------------------ cache

    def _cached(self, key: str, validators: dict[str, Any], require_tool: bool) -> LLMResponse | None:
        assert self._cache is not None
        entry = self._cache.get(key)
        if not entry or entry.get("format") != CACHE_FORMAT:
            return None
        try:
            completion = Completion(
                text=entry["text"],
                tool_calls=[RawToolCall(c["id"], c["name"], c["input"]) for c in entry["tool_calls"]],
                stop_reason=entry["stop_reason"],
                input_tokens=0,
                output_tokens=0,
            )
            usage = Usage(entry["provider"], entry["model"], 0, 0, 0.0, cached=True)
        except (KeyError, TypeError):
            return None
        # Checked again: a cache written by an older schema must not slip invalid output through.
        calls, problems, _ = review_calls(completion, validators, require_tool)
        return None if problems else LLMResponse(completion.text, calls, usage, completion.stop_reason)

    def _store(self, key: str, response: LLMResponse) -> None:
        if self._cache is None:
            return
        entry = {
            "format": CACHE_FORMAT,
            "provider": response.usage.provider,
            "model": response.usage.model,
            "text": response.text,
            "tool_calls": [asdict(call) for call in response.tool_calls],
            "stop_reason": response.stop_reason,
        }
        try:
            self._cache.put(key, entry)
        except OSError as exc:  # the answer is paid for and valid; a full disk must not lose it
            log.warning("llm cache write failed", extra=fields(error=type(exc).__name__))


# ---------------------------------------------------------------------- helpers


def _fallback_for(provider: str, model: str) -> str | None:
    """The provider's fallback for a model we know; none for others (likely a compatible server's own model)."""
    if price_for(model) is None:
        return None
    fallback = FALLBACK_MODELS[provider]
    return DEFAULT_MODELS[provider] if model == fallback else fallback


def _total(usages: list[Usage]) -> Usage:
    last = usages[-1]
    return replace(
        last,
        input_tokens=sum(u.input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        cost_usd=round(sum(u.cost_usd for u in usages), 6),
        price_known=all(u.price_known for u in usages),
    )
