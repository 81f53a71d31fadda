"""The web process: intake of webhooks, the App manifest setup, the runs API with its OpenAPI, auth, SSE and the run page.

It verifies, records and enqueues; it holds no GitHub client, no model and no event router."""
