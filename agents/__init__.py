"""Agents (the loss L), the CLI, configs, runs, evaluation and benchmarks."""
