"""Bisecting a series or a tree: the candidates, judging one against the good end, and the loop over the
search (`search.BisectState`) with its state in a directory (`bisect.json`, `bisect.log`, a bundle per
round).  `harness bisect` and `harness bisect-check` (commands/bisect.py) drive it."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from harness.attribution.bisect_plan import BisectPlan
from harness.attribution.judge import Verdict
from harness.attribution.rounds import Round, failure_rate_lower_bound, judge_step, round_from_bundle
from harness.attribution.search import BAD, GOOD, SKIP, UNKNOWN, BisectState
from harness.errors import HarnessError, InputError
from harness.kernels.build import build_kernel
from harness.kernels.inputs import load_series
from harness.kernels.resolve import image_digest, resolve_kernel
from harness.kernels.spec import KernelSpec, file_spec, parse_kernel_spec, series_ref
from harness.process import git as run_git
from harness.results.bundle import load_bundle
from harness.results.scenario_run import run_scenario
from harness.scenario.schema import load_scenario

STATE_FILE = "bisect.json"
LOG_FILE = "bisect.log"


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
