"""Thin controllers: parse, call a service, render."""
