"""Report formatting: no float noise, small values stay readable, tiny models are named."""

import numpy as np
import pandas as pd
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.pipeline.report import format_value, markdown_table, model_notes


def test_values_keep_three_significant_figures_without_noise():
    assert format_value(3.1234e-05) == "3.12e-05"
    assert format_value(0.93812) == "0.938"
    assert format_value(0.0) == "0" and format_value(np.nan) == "" and format_value(7) == "7"
    table = markdown_table(pd.DataFrame({"gap": [0.0, 0.25], "Sm": [3.04e-05, 1.945]}))
    assert "e-17" not in table and "3.04e-05" in table and "| 0 |" in table


def test_tiny_and_untrained_models_are_named():
    with open(PROJECT_ROOT / "config" / "demo.yaml") as fh:
        notes = "\n".join(model_notes(validate_config(yaml.safe_load(fh))))
    assert "tiny-mamba** (mamba): a TINY RANDOM model" in notes
    assert "Untrained arms (random initialisation, no training): random." in notes
