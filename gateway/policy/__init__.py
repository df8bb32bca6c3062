"""Policies: the YAML models, loading and validation, the served view, hot reload, secrets, templates."""
