"""``python -m fusion demo|study ...``: the end-to-end demo and the study (see :mod:`fusion.demo`)."""

from __future__ import annotations

import sys

USAGE = """usage: python -m fusion demo  [--quick | --tiny] [--out DIR] [--seeds S ...] [--workers N]
       python -m fusion study [--tiny] [--cells NAME ...] [--seeds S ...] [--list] [--out DIR]

commands:
  demo    train two tiny teachers, cache them, fuse them into a pivot (SFT, +ULD, +ULD+GLD)
          and evaluate everything with Zero-shot-CoT, offline (python -m fusion demo --help)
  study   when does distillation help? SFT vs +ULD vs +ULD+GLD over many regimes and seeds,
          with paired 95% intervals; resumable (python -m fusion study --help)

related: python -m fusion.cache (teacher caches), python -m fusion.eval (evaluation)"""


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``python -m fusion COMMAND``; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if args[0] == "demo":
        from fusion.demo.cli import demo_main

        return demo_main(args[1:])
    if args[0] == "study":
        from fusion.demo.cli import study_main

        return study_main(args[1:])
    print(f"{USAGE}\n\nunknown command {args[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
