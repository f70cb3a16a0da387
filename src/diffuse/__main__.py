"""``python -m diffuse``: the command line, the same as the ``diffuse`` script."""

import sys

from diffuse.cli import main

if __name__ == "__main__":
    sys.exit(main())
