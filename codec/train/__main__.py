"""`python -m codec.train --config CONFIG.yaml [key=value ...]`, the same as `codec train`; this form is the one
to give `accelerate launch`."""
from __future__ import annotations

import argparse
import sys

from ..config import load_yaml
from ..errors import CodecError
from .config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (see recipes/)")
    parser.add_argument("--init-weights", help="warm-start the generator from this weights file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. steps=1000 data.batch_size=4")


def run(args: argparse.Namespace) -> int:
    from .trainer import train
    config = load_yaml(TrainConfig, args.config, args.overrides)
    weights = train(config, args.init_weights)
    print(f"weights: {weights}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.train", description=__doc__)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except CodecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
