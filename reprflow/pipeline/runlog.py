"""How a workflow step runs: log to the rule's log file, and turn user errors into one line.

Entry scripts in workflow_scripts/ wrap their single call in :func:`workflow_step`, so a
:class:`~reprflow.errors.ReprflowError` ends the job with one clear message (naming the log
file) and a nonzero exit, instead of a traceback.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from reprflow.errors import ReprflowError


@contextmanager
def workflow_step(log_path: str | Path, name: str):
    """Send logging (INFO) to ``log_path`` and stderr; exit 1 with one line on a ReprflowError."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.FileHandler(log_path, mode="w")
    file_handler.setFormatter(fmt)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(file_handler)
    try:
        yield logging.getLogger(f"reprflow.step.{name}")
    except ReprflowError as exc:
        logging.getLogger(f"reprflow.step.{name}").error("%s", exc)
        sys.stderr.write(f"reprflow: {name} failed: {exc}\n  (log: {log_path})\n")
        sys.exit(1)
    except Exception:
        logging.getLogger(f"reprflow.step.{name}").exception("unexpected error")
        sys.stderr.write(f"reprflow: {name} failed with an unexpected error; traceback in {log_path}\n")
        raise
    finally:
        root.removeHandler(file_handler)
        file_handler.close()
