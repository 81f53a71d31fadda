"""Every text nofx shows on GitHub, as pure functions: one renderer per surface, no I/O."""
