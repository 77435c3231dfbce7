"""``python -m reprflow``: the ``reprflow`` command (:mod:`reprflow.cli`)."""

import sys

from reprflow.cli import main

sys.exit(main())
