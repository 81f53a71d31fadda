"""LLM reviews of pull requests: passes, diff chunking, findings and their placement, publishing."""
