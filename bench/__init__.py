"""Benchmarks for asgi_auth0: ``python -m bench`` (see bench/README.md)."""
