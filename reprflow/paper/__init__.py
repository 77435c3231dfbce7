"""The numbers the paper prints (Hoang et al. 2025, arXiv 2510.06640), shipped as package data.

``tables.csv`` holds its Table 1 (mean over MDQA and KVPR) and Table 2 (per task), one row per
(table, model, task, length), as printed; its header comment says where each column comes from.
A package of its own so that only the code that reads it (the report phase) tracks the file:
editing it reruns the comparison (reprflow/pipeline/paper_comparison.py), never an extraction.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_TABLES = Path(__file__).with_name("tables.csv")
ARXIV = "2510.06640"
COLUMNS = ["table", "model", "hf_id", "task", "length", "last_acc", "gap", "Sm", "St"]
"""``table`` 1 or 2; ``model`` the paper's name; ``hf_id`` its checkpoint; ``task`` ``mean`` (Table 1),
``mdqa`` or ``kvpr``; ``length`` in tokens (1K = 1024); ``last_acc`` and ``gap`` in % (percentage
points); ``Sm`` and ``St`` in absolute units (paper Eq. 3, 4)."""


def paper_tables() -> pd.DataFrame:
    """The paper's Tables 1 and 2: 54 rows (Table 1: 18, Table 2: 36), columns :data:`COLUMNS`."""
    frame = pd.read_csv(PAPER_TABLES, comment="#")
    return frame[COLUMNS]
