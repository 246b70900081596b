"""`python -m samadapt ...` (also what torchrun launches) runs the command-line interface."""

import sys

from samadapt.cli import main

if __name__ == "__main__":
    sys.exit(main())
