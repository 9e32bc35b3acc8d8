"""The MAML paper's figures shipped with metarl (``metarl/data/maml_paper_returns.json``).

Finn, Abbeel, Levine 2017, mean return after k = 0..3 adaptation steps for MAML, the
pretrained and the random-initialisation baselines (and the oracle), per task family;
``metarl demo`` and ``scripts/reproduce_maml.py`` print ours beside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PAPER_RETURNS = Path(__file__).resolve().parents[1] / "data" / "maml_paper_returns.json"
"""Next to this package (not importlib.resources: it fails when metarl is resolved as a
namespace package, as some editable installs do)."""


def paper_returns() -> dict[str, Any]:
    """The MAML paper's figures (``{"source", "protocol", "returns": {family: {method: [k = 0..3]}}}``)."""
    return json.loads(PAPER_RETURNS.read_text())
