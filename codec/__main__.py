"""`python -m codec ...`: the `codec` command, in the form `accelerate launch -m codec export ...` needs."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
