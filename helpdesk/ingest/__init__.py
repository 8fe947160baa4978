"""Inbound mail: sources, parsing, classification and the per-message pipeline."""
