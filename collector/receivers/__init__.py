"""Receivers: OTLP/HTTP in."""
