"""Each notebook opened alone, as a Colab badge opens it: a fresh kernel and an empty workspace, offline.

    python bench/notebooks_alone.py            # offline, the real offline recipe (02-06 rebuild what they need)
    python bench/notebooks_alone.py --smoke    # CI's seconds-long settings
    python bench/notebooks_alone.py --only 04_evaluate 06_demo_widget

Prints each notebook's wall time and saves them with the machine to ``bench/results/notebooks_alone[_smoke].json``.
A notebook that fails stops the run with its error (the partly executed copy stays in the temporary workspace's
``notebooks/``, whose path is printed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine_info, write_json  # noqa: E402

from asit_helpers.notebooks import NOTEBOOKS  # noqa: E402
from asit_helpers.suite import run_suite  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CI's seconds-long training")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="these notebooks only")
    args = parser.parse_args(argv)
    names = [n if n.endswith(".ipynb") else n + ".ipynb" for n in args.only] if args.only else list(NOTEBOOKS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="asit-alone-") as tmp:
        for name in names:
            work = Path(tmp) / name[:2]  # a fresh, empty workspace per notebook
            [result] = run_suite(work, notebooks=[name], smoke=args.smoke, log=lambda line: None)
            rows.append({"notebook": name, "seconds": result["seconds"]})
            print(f"{name:<24} alone, offline{' smoke' if args.smoke else ''}: {result['seconds']:6.0f} s", flush=True)
    out = RESULTS / f"notebooks_alone{'_smoke' if args.smoke else ''}.json"
    write_json(out, {"machine": machine_info(), "smoke": args.smoke, "notebooks": rows})
    print(f"total {sum(r['seconds'] for r in rows):.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
