"""GitHub's REST API: the App's auth and the one client factory, its identity, permissions, repository reads, thread references."""
