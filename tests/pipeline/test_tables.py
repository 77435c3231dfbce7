"""Tables from metric files: layout, task averaging, peak/gap, empty cells beyond context."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from reprflow.config import PROJECT_ROOT, validate_config
from reprflow.pipeline.tables import VALUE_COLUMNS, build_tables
from reprflow.workflow.targets import PROBES, TOKEN_METRICS, cells


@pytest.fixture()
def config():
    with open(PROJECT_ROOT / "config" / "demo.yaml") as fh:
        raw = yaml.safe_load(fh)
    raw["models"] = raw["models"][:2]  # tiny-gpt-neo (context 512) and tiny-pythia
    raw["inits"] = raw["inits"][:1]
    raw["metrics"]["views"] = ["hf"]
    raw.pop("custom_tasks")  # test_custom_task_has_table2_rows_only adds one
    return validate_config(raw)


def _curve(cell, k=5):
    """A known accuracy curve per cell: peak at state 2 for kvpr, state 3 for mdqa."""
    peak = 2 if cell.task == "kvpr" else 3
    acc = np.linspace(0.2, 0.4, k)
    acc[peak] = 0.9
    return acc


def _write_cell(root, cell):
    rows = []
    for seed, noise in ((0, -0.01), (1, 0.01)):
        for i, a in enumerate(_curve(cell)):
            rows.append(
                {
                    "view": "hf",
                    "state_index": i,
                    "state_name": f"s{i}",
                    "seed": seed,
                    "val_accuracy": a + noise,
                    "train_accuracy": 1.0,
                }
            )
    probes = root / cell.fmt(PROBES)
    probes.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(probes, index=False)
    probes.with_suffix(".json").write_text(json.dumps({"provenance": {"store": "x"}}))
    token = root / cell.fmt(TOKEN_METRICS)
    token.mkdir(parents=True, exist_ok=True)
    sm = 1.0 if cell.task == "kvpr" else 3.0
    (token / "smoothness_stability.json").write_text(json.dumps({"hf": {"Sm": sm, "St": 2 * sm}, "provenance": {}}))


def test_tables_layout_and_values(tmp_path, config):
    for cell in cells(config):
        _write_cell(tmp_path, cell)
    table1, table2 = build_tables(config, root=tmp_path)
    assert list(table1.columns) == ["model", "init", "view", "length", *VALUE_COLUMNS]
    assert list(table2.columns) == ["model", "init", "view", "task", "length", *VALUE_COLUMNS]
    assert len(table1) == 2 * 2 and len(table2) == 2 * 2 * 2  # models x lengths (x tasks)

    # beyond context (tiny-gpt-neo at 600 > 512): present, all values empty
    skipped = table1[(table1.model == "tiny-gpt-neo") & (table1.length == 600)]
    assert len(skipped) == 1 and skipped[VALUE_COLUMNS].isna().all(axis=None)

    row = table2[(table2.model == "tiny-pythia") & (table2.task == "mdqa") & (table2.length == 300)].iloc[0]
    assert row.peak_layer == 3 and row.peak_acc == pytest.approx(0.9)
    assert row.last_acc == pytest.approx(0.4) and row.gap == pytest.approx(0.5)
    assert row.Sm == 3.0 and row.St == 6.0

    # table 1 averages the curves over tasks first: kvpr peak 0.9 at 2, mdqa 0.9 at 3 -> tie resolved to the first
    row = table1[(table1.model == "tiny-pythia") & (table1.length == 300)].iloc[0]
    mean_curve = (_curve(cells(config)[0]) + _curve(cells(config)[1])) / 2
    assert row.peak_layer == int(np.argmax(mean_curve))
    assert row.peak_acc == pytest.approx(mean_curve.max())
    assert row.Sm == pytest.approx(2.0) and row.St == pytest.approx(4.0)


def test_missing_metric_file_is_named(tmp_path, config):
    from reprflow.errors import ReprflowError

    with pytest.raises(ReprflowError, match="probes.csv: metric file missing"):
        build_tables(config, root=tmp_path)


def test_custom_task_has_table2_rows_only(tmp_path, config):
    """A custom task at a paper length (300) on one model: its own Table 2 rows, and Table 1 stays
    the mean over kvpr and mdqa (its Sm 3.0 would pull the kvpr/mdqa mean 2.0 up to 2.33)."""
    raw = copy.deepcopy(config.raw)
    raw["custom_tasks"] = {"mine": {"jsonl": "mine.jsonl", "length": 300, "models": ["tiny-pythia"]}}
    custom = validate_config(raw)
    for cell in cells(custom):
        _write_cell(tmp_path, cell)
    table1, table2 = build_tables(custom, root=tmp_path)
    mine = table2[table2.task == "mine"]
    assert len(mine) == 1 and (mine.model.iloc[0], mine.length.iloc[0], mine.Sm.iloc[0]) == ("tiny-pythia", 300, 3.0)
    assert len(table2) == 2 * 2 * 2 + 1 and len(table1) == 2 * 2
    row = table1[(table1.model == "tiny-pythia") & (table1.length == 300)].iloc[0]
    assert row.Sm == pytest.approx(2.0)
