"""Petrel's AWS CDK infrastructure.

The table, queue and environment-variable names live in the `petrel` layer
(`layers/core/python/petrel/resources.py`); the infra imports them from there rather than
repeating them, so that directory is put on the import path here.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PETREL_LAYER_SOURCE = REPO_ROOT / "layers" / "core" / "python"

if str(PETREL_LAYER_SOURCE) not in sys.path:
    sys.path.insert(0, str(PETREL_LAYER_SOURCE))
