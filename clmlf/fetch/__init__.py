"""Untrusted images: the SSRF-safe HTTP client (address policy, pinned transport, fetcher) and the safe decoder."""
