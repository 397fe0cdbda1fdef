"""``python -m parapipe.service MODULE:GRAPH``: run the HTTP service (same as ``parapipe serve``)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
