"""Models: loading, parameter-efficient methods, merging."""
