"""``python -m gwlite.verify [options]``: the same as ``gwlite verify [options]``."""

from gwlite.verify import main

raise SystemExit(main())
