"""``python -m fusion.eval``: see :mod:`fusion.eval.cli`."""

from fusion.eval.cli import main

raise SystemExit(main())
