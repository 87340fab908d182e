"""Evaluation metrics. Functions return numbers (never print); the CLI prints tables."""
