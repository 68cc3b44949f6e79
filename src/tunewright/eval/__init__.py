"""Evaluation: generation (and, in later releases, metrics and reports)."""
