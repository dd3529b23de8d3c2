"""``python -m mesh --version``: the version and which hot path is active."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh", description="mesh: a peer-to-peer agent mesh")
    parser.add_argument("--version", action="store_true", help="print the version and the active hot path")
    args = parser.parse_args(argv)
    import mesh

    if args.version:
        print(f"mesh {mesh.__version__} ({mesh.IMPLEMENTATION} hot path, Python {sys.version.split()[0]})")
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
