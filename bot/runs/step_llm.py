"""The LLM as a step sees it: the run's router, with every call's tokens and cost charged to the step."""

from __future__ import annotations

from typing import Any

from bot.llm.router import LLM, Budget, LLMResponse
from bot.models import Step
from bot.runs import records
from bot.store import Store


class StepLLM:
    """The LLM as a step sees it: the same router, with every call's tokens and cost charged to the step."""

    def __init__(self, llm: LLM, store: Store, step: Step) -> None:
        self._llm = llm
        self._store = store
        self._step = step

    async def call(self, **kwargs: Any) -> LLMResponse:
        budget: Budget | None = kwargs.get("budget")
        spent_before = budget.spent_usd if budget else 0.0
        response: LLMResponse | None = None
        try:
            response = await self._llm.call(**kwargs)
            return response
        finally:
            usage = response.usage if response else None
            cost = (budget.spent_usd - spent_before) if budget else (usage.cost_usd if usage else 0.0)
            if usage is not None or cost > 0:
                records.add_usage(
                    self._store,
                    self._step,
                    input_tokens=usage.input_tokens if usage else 0,
                    output_tokens=usage.output_tokens if usage else 0,
                    cost_usd=cost,
                    detail={
                        "purpose": kwargs.get("purpose", ""),
                        "provider": usage.provider if usage else "",
                        "model": usage.model if usage else "",
                        "cached": usage.cached if usage else False,
                    },
                )
