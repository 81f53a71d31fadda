"""The one way nofx talks to a model: the router, the provider adapters, costs and budgets, prompt templates."""
