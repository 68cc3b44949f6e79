"""Data: sources -> formats -> template -> tokens with labels -> batches."""
