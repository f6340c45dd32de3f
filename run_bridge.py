#!/usr/bin/env python3
"""Entry point: `python run_bridge.py --help`."""

import sys

from bridge.cli import main

if __name__ == "__main__":
    sys.exit(main())
