"""The scratch-project helpers (``workdir``, ``run_snakemake``) live in tests/conftest.py,
shared with tests/cluster."""
