"""nofx: a GitHub App that turns `/nofx` commands into reviewed, tested pull requests.

Core modules live here (settings, logs, store, models, plans, repo_config, deliveries, queue); each
subpackage owns one concern, and layers import downward only (README, "Architecture")."""
