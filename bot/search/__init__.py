"""Semantic search: embeddings, the Chroma index of code, artifacts and runs, and code search merged with regex matches."""
