"""Step handlers, one module per plan tool; discovered by tool name."""
