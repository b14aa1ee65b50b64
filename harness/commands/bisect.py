"""`harness bisect` and `harness bisect-check`: find the patch or commit that moved a number.

    harness bisect SCENARIO --good base+zs --bad base+zs+S --metric fault_in_ms@touch
    harness bisect SCENARIO --good base+zs --bad base+zs+S --expect nonzero_pages
    harness bisect SCENARIO --tree ~/linux --good v6.12 --bad HEAD --metric sys_ms@touch4k
    harness bisect --resume results/bisect-...

Over a series, the candidates are its prefixes (--good is the stack below it, or SERIES@G; --bad the
stack with it, or SERIES@B); over a tree, the first-parent commits from --good to --bad, each built with
the guest config (cached by commit, ccache; a commit that changes no file the build uses is not rebuilt).
A candidate whose kernel image is byte for byte one already judged takes that verdict without a run.  Each step runs the scenario on the candidate and
on the good end in the same bundle, interleaved in alternating order, and judges with `compare`'s rules:
the bad end must move the metric (or fail the expectation); a candidate is bad when it moves it the same
way.  A comparison that is not yet significant gets more repetitions, up to --max-reps; then the step is
"unknown".  On an expectation, a failed repetition makes a candidate bad; a clean one is good only after as
many clean repetitions as it takes for the bad end's failure rate to have shown with 95 % confidence (up to
--max-reps; the verdict says how confident it is).  A candidate that does not build, or that could not be
judged (no boot, no SSH, QEMU did not start), is skipped; one whose kernel crashes (panic, Oops) is bad
(--panic skip: skipped).  The answer is the first bad patch or commit, or
the range the skipped and unknown ones leave, never a guess.  The state (bisect.json), a log like
`git bisect log` (bisect.log) and one bundle per round are kept in the bisect directory; --resume goes on
after an interruption.

`harness bisect-check` judges one kernel for `git bisect run`: exit 0 good, 1 bad (the metric regressed,
the expectation failed, or the kernel crashed), 125 skip (it does not build, or a harness error while
judging: no boot, no SSH, QEMU did not start; the kernel crashed with --panic skip; cannot tell), 128 bad
input or usage (which aborts `git bisect run`, as every exit code above 127 does).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from harness.attribution.bisect_plan import BisectPlan
from harness.attribution.bisection import Bisect, new_directory, series_candidates, tree_candidates
from harness.attribution.judge import Criterion
from harness.attribution.rounds import PANIC_CHOICES
from harness.attribution.search import BAD, GOOD, UNKNOWN, BisectState
from harness.commands.options import add_jobs_option, add_timing_option
from harness.errors import HarnessError, InputError
from harness.kernels.build import build_kernel
from harness.kernels.resolve import check_available
from harness.kernels.spec import file_spec, parse_kernel_spec
from harness.results import stats
from harness.results.metrics import definition
from harness.results.scenario_run import DEFAULT_RESULTS, check_jobs
from harness.scenario.schema import load_scenario

# `git bisect run` reads 0 as good, 1-127 but 125 as bad, 125 as skip, anything else as "abort the bisect"
EXIT_GOOD, EXIT_BAD, EXIT_SKIP, EXIT_ABORT = 0, 1, 125, 128


# -------------------------------------------------------------------------------------------- commands


def new_bisect(args) -> Bisect:
    if not args.scenario:
        raise InputError("give a SCENARIO (or --resume DIR)")
    load_scenario(args.scenario)  # bad input before anything is built
    criterion = Criterion.parse(args.metric, args.expect, args.threshold)
    if not args.good or not args.bad:
        raise InputError("give --good and --bad (or --resume DIR)")
    if args.tree:
        candidates, labels = tree_candidates(Path(args.tree).expanduser(), args.good, args.bad)
    else:  # the ends are kernel specs: parsed here, once
        specs, labels = series_candidates(parse_kernel_spec(args.good), parse_kernel_spec(args.bad))
        candidates = [s.text for s in specs]
    directory = new_directory(Path(args.results or DEFAULT_RESULTS), "bisect")
    plan = BisectPlan(scenario=str(Path(args.scenario).resolve()), good=args.good, bad=args.bad,
                      tree=str(Path(args.tree).expanduser().resolve()) if args.tree else None,
                      candidates=candidates, labels=labels, criterion=criterion, reps=args.reps,
                      max_reps=args.max_reps, timing=args.timing, panic=args.panic)
    return Bisect(directory, plan, BisectState(labels))


def cmd_bisect(args) -> int:
    check_reps(args)
    check_jobs(args.jobs)
    bisect = Bisect.load(Path(args.resume)) if args.resume else new_bisect(args)
    bisect.jobs = args.jobs
    print(f"bisect: {bisect.dir}: {bisect.state.n} candidates, at most {bisect.state.steps_left()} steps",
          file=sys.stderr)
    bisect.save()
    return bisect.run()


def cmd_bisect_check(args) -> int:
    """Exit codes for `git bisect run`: never 1-127 for anything but a bad candidate."""
    try:
        return bisect_check(args)
    except InputError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return EXIT_ABORT
    except HarnessError as exc:
        print(f"bisect-check: skip: could not judge (harness error): {exc}")
        return EXIT_SKIP
    except Exception:  # a harness bug must stop the bisect, never mark the commit bad (or skip every one)
        traceback.print_exc()
        print("bisect-check: internal error: aborting the bisect", file=sys.stderr)
        return EXIT_ABORT


def bisect_check(args) -> int:
    load_scenario(args.scenario)
    criterion = Criterion.parse(args.metric, args.expect, args.threshold)
    check_reps(args)
    check_jobs(args.jobs)
    if bool(args.kernel) == bool(args.tree):
        raise InputError("give exactly one of --kernel SPEC and --tree PATH")
    if args.bad_fail_rate is not None and not (0 < args.bad_fail_rate <= 1 and criterion.expect):
        raise InputError(f"--bad-fail-rate {args.bad_fail_rate}: give it with --expect, as a fraction in (0, 1]")
    if args.tree and not Path(args.tree).expanduser().is_dir():
        raise InputError(f"--tree {args.tree}: no such directory")
    for spec in filter(None, [args.good, args.kernel]):
        check_available(spec)
    try:
        candidate = args.kernel or file_spec(str(build_kernel(None, tree=Path(args.tree).expanduser()).bzimage))
    except HarnessError as exc:  # a commit that does not build is skipped, whatever the reason
        print(f"bisect-check: skip: cannot build: {str(exc).splitlines()[0]}")
        return EXIT_SKIP
    plan = BisectPlan(scenario=args.scenario, candidates=[args.good.text, candidate.text],
                      labels=["good", "candidate"], criterion=criterion,
                      direction=1 if criterion.metric is None or definition(criterion.metric).better == "lower" else -1,
                      bad_fail_rate=args.bad_fail_rate, reps=args.reps, max_reps=args.max_reps, timing=args.timing,
                      panic=args.panic)
    try:
        directory = new_directory(Path(args.results or DEFAULT_RESULTS), "bisect-check")
    except HarnessError as exc:  # every step would fail the same way: abort, never skip them all
        raise InputError(str(exc)) from None
    bisect = Bisect(directory, plan, BisectState(plan.labels), jobs=args.jobs)
    v = bisect.judge(1, plan.direction)  # bad only when the metric moved the worse way
    bisect.state.record(1, v.verdict or UNKNOWN, v.evidence, v.confidence)
    bisect.save()
    print(f"bisect-check: {v.verdict}: {v.evidence}")
    return {GOOD: EXIT_GOOD, BAD: EXIT_BAD}.get(v.verdict or UNKNOWN, EXIT_SKIP)


def check_reps(args) -> None:
    if args.reps < 1 or args.max_reps < args.reps:
        raise InputError(f"--reps must be at least 1 and --max-reps at least --reps (got {args.reps}, {args.max_reps})")


def add_common(p) -> None:
    p.add_argument("--metric", metavar="NAME@PHASE", help="judge this metric (e.g. fault_in_ms@touch4k)")
    p.add_argument("--expect", metavar="NAME", help="or this scenario expectation (e.g. nonzero_pages)")
    p.add_argument("--threshold", type=float, default=stats.DEFAULT_THRESHOLD_PCT, metavar="PCT",
                   help="smallest change that counts (default %(default)s; icount timings: 1)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per kernel and round (default 3)")
    p.add_argument("--max-reps", type=int, default=12,
                   help="repetitions a side before a step is 'unknown' (default 12)")
    p.add_argument("--panic", choices=PANIC_CHOICES, default=BAD,
                   help="a candidate whose kernel crashes (panic, Oops) at boot or in the scenario is bad "
                        "(default) or skipped")
    p.add_argument("--results", metavar="DIR", help="where the bisect directory goes (default results/)")
    add_timing_option(p)
    add_jobs_option(p)


def register(subparsers) -> None:
    p = subparsers.add_parser("bisect", help="find the patch or commit that moved a metric or broke an expectation",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", nargs="?", help="scenario YAML file")
    p.add_argument("--good", metavar="SPEC|REV", help="the good end: a kernel spec, or a revision with --tree")
    p.add_argument("--bad", metavar="SPEC|REV", help="the bad end")
    p.add_argument("--tree", metavar="PATH", help="bisect the commits of this kernel checkout")
    p.add_argument("--resume", metavar="DIR", help="go on with an interrupted bisect")
    add_common(p)
    p.set_defaults(func=cmd_bisect)
    c = subparsers.add_parser("bisect-check", help="judge one kernel against a good one, for git bisect run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("scenario", help="scenario YAML file")
    c.add_argument("--good", required=True, metavar="SPEC", type=parse_kernel_spec,
                   help="the known good kernel (spec or bzImage)")
    c.add_argument("--kernel", metavar="SPEC", type=parse_kernel_spec, help="the kernel to judge")
    c.add_argument("--tree", metavar="PATH", help="or build this checkout as it is and judge it")
    c.add_argument("--bad-fail-rate", type=float, metavar="P",
                   help="with --expect: how often the bad end fails it (0.3: 3 runs in 10); a good verdict then "
                        "needs enough clean repetitions for that to show with 95%% confidence (up to --max-reps)")
    add_common(c)
    c.set_defaults(func=cmd_bisect_check)
