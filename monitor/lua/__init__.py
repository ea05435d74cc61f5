"""Lua scripts run atomically inside Redis by :mod:`monitor.store` (package data)."""
