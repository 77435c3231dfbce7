"""reprflow: contextual representation flow in Transformers and state-space models.

Reference implementation of Hoang et al. 2025 (arXiv 2510.06640). The library is
pure computation plus thin I/O; the Snakemake workflow (Snakefile, rules/) wires it.
"""

__version__ = "0.1.0"
