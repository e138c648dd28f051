"""Command-line entry points: `python -m experiments.run`, paper presets."""
