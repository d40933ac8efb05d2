"""Regenerate bench/BENCHMARKS.md: every table, or the sections named.

    python bench/run.py                                   # everything (about 40 minutes on 2 idle cores)
    python bench/run.py --sections startup parity         # just these; the other sections stay as they are

Each section of BENCHMARKS.md sits between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->` markers and is replaced whole, with a line saying when,
on what, and under which load it was measured. Run it on an idle machine: every
figure is a wall-clock time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
from collections.abc import Callable
from pathlib import Path

import callback_costs
import parity
import results
import startup

BENCHMARKS = Path(__file__).resolve().parent / "BENCHMARKS.md"


def _results_sections() -> dict[str, str]:
    return results.tables(results.HEADLINES, seeds=[42])


SECTIONS: dict[str, Callable[[], dict[str, str]]] = {
    "startup": lambda: {"startup": startup.table(repeats=5)},
    "parity": lambda: {"parity": parity.table(list(parity.WORKLOADS), repeats=5)},
    "callbacks": lambda: {"callbacks": callback_costs.table()},
    "results": _results_sections,  # also writes the `inference` section: it serves the models it trained
}


def provenance() -> str:
    import lightning
    import torch

    load = os.getloadavg()[0]
    return (f"_Measured {datetime.date.today()} with `python bench/run.py`: {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
            f"Lightning {lightning.__version__}; load average {load:.1f} when it started._")


def replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{BENCHMARKS.name} has no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers")
    return pattern.sub(lambda match: f"{match.group(1)}{body}\n{match.group(2)}", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    options = parser.parse_args()
    for name in options.sections:
        header = provenance()
        tables = SECTIONS[name]()
        text = BENCHMARKS.read_text()
        for section, body in tables.items():
            text = replace_section(text, section, f"{header}\n\n{body}\n")
        BENCHMARKS.write_text(text)  # after every section, so a long run keeps what it has measured
        print(f"{name}: written to {BENCHMARKS}")


if __name__ == "__main__":
    main()
