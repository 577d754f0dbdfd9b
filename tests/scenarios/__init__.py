"""Other matching engines' scenario tests, replayed against our engine.

The scenario files live in the shared data directory (``../shared/data/scenarios`` beside the
repository, or ``$BOURSE_DATA_DIR/scenarios``) and are read in place, never copied here:

* ``exchange-core/*.feature`` — Gherkin, steps in :mod:`tests.scenarios.exchange_core`;
* ``MultiBitExchange/*.feature`` — Gherkin, steps in :mod:`tests.scenarios.multibit`;
* ``csv-matching/*.csv`` — input commands and expected output, see
  :mod:`tests.scenarios.csv_matching`.

:mod:`tests.scenarios.gherkin` parses the feature files and :mod:`tests.scenarios.steps` runs
their steps.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (this file is ``tests/scenarios/__init__.py``).
REPO_ROOT = Path(__file__).resolve().parents[2]


def scenarios_dir() -> Path | None:
    """The shared scenario files, or None if they are not there.

    ``$BOURSE_DATA_DIR/scenarios`` if that variable is set, else ``../shared/data/scenarios``
    relative to the repository root.
    """
    configured = os.environ.get("BOURSE_DATA_DIR")
    data = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"
    path = data / "scenarios"
    return path if path.is_dir() else None
