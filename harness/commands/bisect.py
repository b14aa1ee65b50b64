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
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from harness.attribution.bisect_plan import BisectPlan
from harness.attribution.judge import Criterion, Verdict
from harness.attribution.rounds import PANIC_CHOICES, Round, failure_rate_lower_bound, judge_step, round_from_bundle
from harness.attribution.search import BAD, GOOD, SKIP, UNKNOWN, BisectState
from harness.commands.jobs_option import add_jobs_option
from harness.commands.run import add_timing_option
from harness.errors import HarnessError, InputError
from harness.kernels.build import build_kernel
from harness.kernels.inputs import load_series
from harness.kernels.resolve import check_available, image_digest, resolve_kernel
from harness.kernels.spec import KernelSpec, file_spec, parse_kernel_spec, series_ref
from harness.process import git as run_git
from harness.results import stats
from harness.results.bundle import load_bundle
from harness.results.metrics import definition
from harness.results.scenario_run import DEFAULT_RESULTS, check_jobs, run_scenario
from harness.scenario.schema import load_scenario

STATE_FILE = "bisect.json"
LOG_FILE = "bisect.log"
# `git bisect run` reads 0 as good, 1-127 but 125 as bad, 125 as skip, anything else as "abort the bisect"
EXIT_GOOD, EXIT_BAD, EXIT_SKIP, EXIT_ABORT = 0, 1, 125, 128


# ------------------------------------------------------------------------------------------ candidates


def series_candidates(g: KernelSpec, b: KernelSpec) -> tuple[list[KernelSpec], list[str]]:
    """Specs and labels of candidates 0..n when --good and --bad differ in how much of one series they apply."""
    good, bad = g.text, b.text
    if g.kind != "build" or b.kind != "build" or not b.series:
        raise InputError("--good and --bad must be base+... specs (or use --tree PATH with revisions)")
    name, bad_n = series_ref(b.series[-1])
    below = b.series[:-1]
    if g.series == below:
        good_n = 0
    elif g.series[:-1] == below and series_ref(g.series[-1])[0] == name and \
            (count := series_ref(g.series[-1])[1]) is not None:
        good_n = count
    else:
        raise InputError(f"--bad {bad!r} must be --good {good!r} plus (more of) one series: "
                         f"--good base+X --bad base+X+S, or --good base+X+S@G --bad base+X+S[@B]")
    patches = load_series(name).patches
    bad_n = len(patches) if bad_n is None else bad_n
    if bad_n > len(patches) or good_n >= bad_n:
        raise InputError(f"series {name} has {len(patches)} patches: nothing between @{good_n} and @{bad_n}")
    stack = KernelSpec("+".join(("base",) + below), "build", series=below)
    specs = [g] + [stack.plus(name if k == len(patches) else f"{name}@{k}") for k in range(good_n + 1, bad_n + 1)]
    labels = [f"good end ({good})"] + [f"{name} {k}/{len(patches)}: {patches[k - 1].subject}"
                                       for k in range(good_n + 1, bad_n + 1)]
    return specs, labels


def git(tree: Path, *args: str) -> str:
    proc = run_git(tree, *args, check=False)
    if proc.returncode != 0:
        raise InputError(f"--tree {tree}: git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout


def tree_candidates(tree: Path, good: str, bad: str) -> tuple[list[str], list[str]]:
    """Commits 0..n (full hashes) and their one-line labels, from --good along the first parents to --bad."""
    g = git(tree, "rev-parse", "--verify", f"{good}^{{commit}}").strip()
    b = git(tree, "rev-parse", "--verify", f"{bad}^{{commit}}").strip()
    commits = [g] + git(tree, "rev-list", "--reverse", "--first-parent", f"{g}..{b}").split()
    if len(commits) < 2 or commits[-1] != b:
        raise InputError(f"--tree {tree}: {bad} is not a descendant of {good} along first parents")
    labels = [git(tree, "log", "-1", "--format=%h %s", c).strip() for c in commits]
    labels[0] = f"good end ({labels[0]})"
    return commits, labels


def build_commit(tree: Path, commit: str, progress=None) -> KernelSpec:
    """The bzImage of one commit of a developer's tree (built in the cache's clone of it; ccache hits)."""
    return file_spec(str(build_kernel(None, tree=tree, tree_rev=commit, progress=progress).bzimage))


# --------------------------------------------------------------------------------------------- a step

BUILD_AHEAD_MIN_CPUS = 4  # an icount guest per job on one core, and the builds on the others


class Bisect:
    """A bisect in its directory: the plan (from the command line or bisect.json) and the search state."""

    def __init__(self, directory: Path, plan: BisectPlan, state: BisectState, jobs: int | None = None):
        self.dir = directory
        self.jobs = jobs  # guests at once (icount); how this session runs, not part of the plan
        self.plan = plan
        self.state = state
        self.criterion = plan.criterion
        self._timing: str | None = None

    def save(self) -> None:
        self.state.save(self.dir / STATE_FILE, extra=self.plan.to_json())
        (self.dir / LOG_FILE).write_text("\n".join(self.state.log_lines()) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Bisect:
        try:
            state = BisectState.load(directory / STATE_FILE)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"--resume {directory}: no readable {STATE_FILE}: {exc}") from None
        return cls(directory, BisectPlan.read(directory / STATE_FILE), state)

    def spec(self, k: int) -> KernelSpec:
        """Candidate k's kernel: its commit built (--tree), or its spec as bisect.json keeps it."""
        if self.plan.tree:
            return build_commit(Path(self.plan.tree), self.plan.candidates[k])
        return parse_kernel_spec(self.plan.candidates[k])

    def judge(self, k: int, direction: int | None) -> Verdict:
        """direction: the sign of the change that makes a candidate bad; None for the bad end itself."""
        try:
            good, candidate = self.spec(0), self.spec(k)
            same = self.same_image(k, good, candidate)
        except HarnessError as exc:
            return Verdict(SKIP, f"does not build: {str(exc).splitlines()[0]}")
        if same is not None:
            return same

        def run_round(reps: int) -> Round:
            outcome = run_scenario(self.plan.scenario, kernels=[good, candidate], reps=reps,
                                   results_dir=self.dir / f"step-{k}", timing=self.plan.timing,
                                   jobs=self.jobs)
            self.plan.bundles.setdefault(str(k), []).append(str(outcome.bundle))
            return round_from_bundle(self.criterion, load_bundle(outcome.bundle), outcome.bundle, good.text,
                                     candidate.text, reps)

        return judge_step(self.criterion, run_round, reps=self.plan.reps, max_reps=self.plan.max_reps,
                          direction=direction, bad_fail_rate=self.plan.bad_fail_rate,
                          panic=self.plan.panic, say=lambda line: print(f"{line} [{k}]", file=sys.stderr))

    def same_image(self, k: int, good: KernelSpec, candidate: KernelSpec) -> Verdict | None:
        """The verdict of a candidate already judged (the good end included) whose kernel is byte for byte
        this one's, as syzkaller's bisection does for commits that do not change the binary; else None."""
        images = self.plan.images
        for j, spec in (("0", good), (str(k), candidate)):
            if j not in images:
                images[j] = image_digest(resolve_kernel(spec))
        for j, digest in images.items():
            verdict = GOOD if j == "0" else self.state.verdict(int(j))
            if j != str(k) and digest == images[str(k)] and verdict in (GOOD, BAD):
                return Verdict(verdict, f"the same kernel image as [{j}] (sha256 {digest[:12]}), judged {verdict}: "
                                        f"not run again")
        return None

    def build_ahead(self, k: int) -> threading.Thread | None:
        """While candidate k is judged, build the candidates the search may judge after it, whichever way k goes.

        Only under icount, whose timings the host's load does not change (a build beside a realtime guest
        would), not for --tree, whose builds check out the one clone k itself is built from, and only on a
        host with cores to spare: on 2 cores the builds of both branches slowed the guests more than they
        saved (a 6-patch bisect took 253 s without, longer with)."""
        if self.plan.tree or self.timing() != "icount" or (os.cpu_count() or 1) < BUILD_AHEAD_MIN_CPUS:
            return None
        js = self.state.candidates_after(k)

        def build() -> None:
            for j in js:
                try:
                    resolve_kernel(self.spec(j))
                except HarnessError:
                    pass  # judging that candidate builds it again, and says why it does not build
        thread = threading.Thread(target=build, name=f"build-ahead-{k}", daemon=True)
        thread.start()
        return thread

    def timing(self) -> str | None:
        """The timing mode the candidates run under (the scenario is read once per session)."""
        if self.plan.timing:
            return self.plan.timing
        if self._timing is None:
            try:
                self._timing = load_scenario(self.plan.scenario).qemu.timing
            except InputError:
                return None  # the scenario changed since the bisect began: judging the candidate says how
        return self._timing

    def run(self) -> int:
        t0 = time.monotonic()
        building: list[threading.Thread] = []
        while (k := self.state.next_candidate()) is not None:
            print(f"bisect: step {len(self.state.steps) + 1}, at most {self.state.steps_left()} to go: "
                  f"[{k}/{self.state.n}] {self.state.labels[k]}", file=sys.stderr)
            t = time.monotonic()
            if (ahead := self.build_ahead(k)) is not None:
                building.append(ahead)  # not waited for: the next step takes its kernel when it is ready
            v = self.judge(k, None if k == self.state.n else self.plan.direction)
            self.state.record(k, v.verdict or UNKNOWN, v.evidence, v.confidence)
            if k == self.state.n and v.verdict == BAD:
                self.plan.direction = v.direction
                if v.failed:  # how often the bad end fails the expectation (at least): sizes the good verdicts
                    self.plan.bad_fail_rate = failure_rate_lower_bound(*v.failed)
            self.save()
            print(f"bisect: [{k}] {v.verdict} in {time.monotonic() - t:.0f} s: {v.evidence}", file=sys.stderr)
        for thread in building:  # no build outlives the bisect
            thread.join()
        return self.report(time.monotonic() - t0)

    def report(self, seconds: float) -> int:
        answer = self.state.answer()
        assert answer is not None, "report() follows the search's end"
        print(f"bisect of {self.criterion.describe()} in {self.dir} ({len(self.state.steps)} steps, "
              f"{seconds / 60:.1f} min this session)")
        print("\n".join(self.state.log_lines()))
        labels = self.state.labels
        if answer.kind == "found" and answer.first_bad is not None:
            print(f"first bad: [{answer.first_bad}] {labels[answer.first_bad]}")
            return 0
        if answer.kind == "bad-end-is-good":
            print(f"the bad end does not move {self.criterion.describe()} against the good end: nothing to bisect")
            return 1
        print("cannot tell which of these is the first bad (skipped or not judgeable): "
              + "; ".join(f"[{i}] {labels[i]}" for i in answer.candidates))
        return 1


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


def new_directory(results: Path, prefix: str) -> Path:
    """results/PREFIX-<UTC time>, or -2, -3... when another bisect started in the same second."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        results.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            directory = results / f"{prefix}-{stamp}{'' if n == 1 else f'-{n}'}"
            try:
                directory.mkdir()
                return directory
            except FileExistsError:
                continue
    except OSError as exc:
        raise HarnessError(f"--results {results}: cannot create a directory there: {exc.strerror or exc}") from None
    raise HarnessError(f"--results {results}: too many {prefix} directories from {stamp}")


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
