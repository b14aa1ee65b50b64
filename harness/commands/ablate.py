"""`harness ablate SCENARIO --series NAME [--series NAME...] [--on SPEC]`: which patch changed what.

Runs the scenario on the kernel below the series (`--on`, default the scenario's first kernel) and on every
prefix of the series (SPEC+NAME@1, SPEC+NAME@2, ..., SPEC+NAME), all in one bundle, interleaved, then
judges each step against the one before with `harness compare`'s rules.  The table (ablation.md), its
data (ablation.json) and a plot of what moved (ablation.png) go into the bundle; the table is printed.
Exit status: 0 when the run completed, 1 when it failed (the table still shows what was measured), 2 on
bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.attribution.ablation import ablate, ablation_steps, plot, to_json, to_markdown
from harness.commands.options import add_jobs_option, add_timing_option
from harness.errors import InputError
from harness.kernels.spec import parse_kernel_spec
from harness.results import stats
from harness.results.bundle import load_bundle
from harness.results.scenario_run import check_jobs, run_scenario
from harness.results.table import provenance
from harness.scenario.schema import load_scenario


def cmd_ablate(args: argparse.Namespace) -> int:
    check_jobs(args.jobs)
    scenario = load_scenario(args.scenario)
    on = args.on or scenario.kernels[0]
    specs, labels = ablation_steps(on, args.series)
    if args.bundle:  # judge an earlier ablation run again (after a rule change, say): nothing boots
        path, ok = Path(args.bundle), True
    else:
        outcome = run_scenario(args.scenario, kernels=specs, reps=args.reps,
                               results_dir=Path(args.results) if args.results else None, timing=args.timing,
                               jobs=args.jobs)
        path, ok = outcome.bundle, outcome.ok
    bundle = load_bundle(path)
    kernels = [s.text for s in specs]
    missing = [k for k in kernels if k not in bundle.kernels]
    if missing:
        raise InputError(f"{path}: has no results for {', '.join(missing)}")
    steps = ablate(bundle, kernels, labels, args.threshold)
    text = to_markdown(steps, f"Ablation of {' + '.join(args.series)} on `{on.text}`; from {provenance(bundle)}.")
    (path / "ablation.md").write_text(text)
    (path / "ablation.json").write_text(json.dumps(to_json(steps), indent=1, default=str) + "\n")
    plot(steps, bundle, path / "ablation.png")
    sys.stdout.write(text)
    print(path)
    return 0 if ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser("ablate", help="run every prefix of a patch series and show what each patch changed",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--series", action="append", required=True, metavar="NAME",
                   help="patch series to ablate, patch by patch (repeatable: their patches in order)")
    p.add_argument("--on", metavar="SPEC", type=parse_kernel_spec,
                   help="the kernel below the series (default: the scenario's first kernel)")
    p.add_argument("--reps", type=int, help="repetitions per kernel (default: the scenario's)")
    p.add_argument("--results", metavar="DIR", help="results directory (default: the repository's results/)")
    p.add_argument("--threshold", type=float, default=stats.DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help="flag only changes larger than PCT percent (default %(default)s)")
    p.add_argument("--bundle", metavar="DIR", help="judge this earlier ablation bundle again instead of running")
    add_timing_option(p)
    add_jobs_option(p)
    p.set_defaults(func=cmd_ablate)
