"""`python -m codec ...`: the `codec` command, in the form a launcher needs: `accelerate launch ... -m codec train ...`,
`torchrun ... -m codec export ...`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
