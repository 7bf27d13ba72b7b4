"""Which modules of `codec/` a command runs functions in, and the calls that cross from one module to another.

    python tools/trace_calls.py encode --force examples/LJ001-0004.wav /tmp/example.codes

Runs `codec ARGS...` in this process under `sys.setprofile`, after the imports (so a module that is only imported
does not count), and prints the modules in the order of their first call, then each crossing (caller module ->
callee module: function) the first time it happens. docs/architecture.md's trace of `codec encode` is its output.
"""
import sys
from pathlib import Path

import codec.cli

ROOT = str(Path(codec.cli.__file__).parent) + "/"


def module(frame) -> str | None:
    name = frame.f_code.co_filename
    return name[len(ROOT):] if name.startswith(ROOT) else None


def main(argv: list[str]) -> int:
    order, crossings = [], []

    def profile(frame, event, arg):
        callee = module(frame) if event == "call" else None
        if callee is None:
            return
        caller = frame.f_back
        while caller is not None and module(caller) is None:  # through torch and the standard library
            caller = caller.f_back
        source = module(caller) if caller is not None else "(entry)"
        if callee not in order:
            order.append(callee)
        if source != callee and (source, callee, frame.f_code.co_name) not in crossings:
            crossings.append((source, callee, frame.f_code.co_name))

    sys.setprofile(profile)
    try:
        code = codec.cli.main(argv)
    finally:
        sys.setprofile(None)
    print(f"exit code {code}; {len(order)} modules: {', '.join(order)}")
    for source, callee, function in crossings:
        print(f"  {source} -> {callee}: {function}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
