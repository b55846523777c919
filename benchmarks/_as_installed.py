"""Run a module as it runs on a box: distributions meter-gateway does not depend on are hidden.

usage: BENCH_HIDDEN=name,name [BENCH_PRELOAD=module,module] python benchmarks/_as_installed.py -m MODULE [ARGS...]
       BENCH_HIDDEN=name,name python benchmarks/_as_installed.py -c CODE

A development venv holds test and lint tools beside the product (pytest, schemathesis and what
they pull in, such as rich), and some libraries import whatever they find: structlog imports rich
when it is installed. ``scripts/install.sh`` installs only meter-gateway's runtime dependencies,
so a box never has them. The benchmark computes which top-level modules belong to distributions
outside that closure (:func:`hidden_modules`) and this launcher makes each of them unimportable
(``sys.modules[name] = None``, an ImportError at import) before anything else is imported: at no
cost in memory, so the figure is the box's.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys

ROOT = "meter-gateway"


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def hidden_modules(root: str = ROOT) -> set[str]:
    """Top-level modules of installed distributions outside ``root``'s runtime closure (no extras)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement  # in the dev venv (pip, pytest use it)

    wanted: set[str] = set()
    todo = [root]
    while todo:
        name = _canonical(todo.pop())
        if name in wanted:
            continue
        wanted.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return {top for top, dists in md.packages_distributions().items()
            if top not in sys.stdlib_module_names and not any(_canonical(d) in wanted for d in dists)}


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("-m", "-c"):
        raise SystemExit(__doc__.split("\n\n")[1])
    for name in filter(None, os.environ.pop("BENCH_HIDDEN", "").split(",")):
        sys.modules[name] = None  # type: ignore[assignment]
    for name in filter(None, os.environ.pop("BENCH_PRELOAD", "").split(",")):
        importlib.import_module(name)  # a library's cost in the running daemon (memory.py's [stellar] floor)
    if sys.argv[1] == "-c":
        code = sys.argv[2]
        sys.argv = ["-c", *sys.argv[3:]]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
        return
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
