"""The package version, in a module of its own: low layers (the tokenization cache key) read it
without importing the package's entry points."""

__version__ = "0.1.0"
