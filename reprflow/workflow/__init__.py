"""Helpers the Snakefile uses: paths and target lists computed from a validated config."""
