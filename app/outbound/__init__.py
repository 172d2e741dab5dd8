"""Outbound requests (forward and replay): target vetting against SSRF and a careful HTTP client."""
