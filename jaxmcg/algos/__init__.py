"""Algorithms: one module each with `Config`, `init`, `act`, `update` (see DESIGN.md)."""
