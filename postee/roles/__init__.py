"""Roles: standalone, controller, runner — which actors run and how they are wired."""
