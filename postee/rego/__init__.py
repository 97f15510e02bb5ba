"""Rego evaluation: engine interface, backends, Postee dialect compatibility, worker pool."""
