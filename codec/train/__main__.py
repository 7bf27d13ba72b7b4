"""`python -m codec.train --config CONFIG.yaml [key=value ...] [--resume | --force]`: `codec train` under
another name, the form to give `accelerate launch`."""
import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
