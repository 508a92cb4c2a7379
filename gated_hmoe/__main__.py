"""Entry point for ``python -m gated_hmoe``."""

import sys

from gated_hmoe.cli import main

if __name__ == "__main__":
    sys.exit(main())
