"""The GitHub workflows: valid against GitHub's workflow schema (check-jsonschema's vendored SchemaStore
schema), every `needs.JOB.outputs.NAME` and `steps.ID.outputs` they use is declared, and the nightly's
shape: plan -> build -> a fail-fast: false matrix of shards from the plan -> merge."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.paths import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_workflows_match_githubs_schema():
    exe = Path(sys.executable).parent / "check-jsonschema"
    proc = subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", *WORKFLOWS], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_output_a_job_reads_is_declared(path):
    jobs = load(path)["jobs"]
    for name, job in jobs.items():
        text = json.dumps(job)
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        for dep, output in re.findall(r"needs\.([\w-]+)\.outputs\.([\w-]+)", text):
            assert dep in needs, f"{name} reads needs.{dep} without needing it"
            assert output in jobs[dep].get("outputs", {}), f"{name} reads {dep}'s undeclared output {output}"
        step_ids = {s.get("id") for s in job.get("steps", [])}
        for sid in re.findall(r"steps\.([\w-]+)\.outputs", text):
            assert sid in step_ids, f"{name} reads the outputs of a step {sid} it does not have"


def test_nightly_shards_come_from_the_plan_and_never_build():
    jobs = load(REPO_ROOT / ".github/workflows/nightly.yml")["jobs"]
    assert jobs["build"]["needs"] == "plan" and set(jobs["shard"]["needs"]) == {"plan", "build"}
    strategy = jobs["shard"]["strategy"]
    assert strategy["fail-fast"] is False
    assert strategy["matrix"]["shard"] == "${{ fromJSON(needs.plan.outputs.shards) }}"
    restore = [s for s in jobs["shard"]["steps"] if s.get("uses", "").startswith("actions/cache/restore@")]
    saved = [s for s in jobs["build"]["steps"] if s.get("uses", "").startswith("actions/cache@")][0]
    assert restore[0]["with"]["key"] == saved["with"]["key"] == "kernels-${{ needs.plan.outputs.builds-key }}"
    assert restore[0]["with"]["path"] == saved["with"]["path"] and restore[0]["with"]["fail-on-cache-miss"]
    shard_text = json.dumps(jobs["shard"])
    assert "run-shard" in shard_text and "--require-accel kvm" in shard_text and "99-kvm4all.rules" in shard_text
    assert "harness merge" in json.dumps(jobs["merge"]) and "always()" in jobs["merge"]["if"]


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq is not installed (the workflow's runners have it)")
def test_the_plan_steps_jq_reads_a_real_plan(tmp_path):
    from harness.results.night_plan import make_plan
    from harness.results.shards import write_model

    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"- scenario: {REPO_ROOT / 'scenarios/smoke.yaml'}\n  kernels: [stock, base]\n"
                      f"- scenario: {REPO_ROOT / 'scenarios/smoke.yaml'}\n  kernels: [base]\n  aa: true\n")
    plan = make_plan(matrix, 2, [])
    write_model(tmp_path / "plan.json", plan)
    step = next(s for s in load(REPO_ROOT / ".github/workflows/nightly.yml")["jobs"]["plan"]["steps"]
                if s.get("id") == "plan")
    out = tmp_path / "out"
    script = step["run"].replace('.venv/bin/harness plan "$MATRIX" --shards "$SHARDS" --history results '
                                 '--out plan.json', "true")
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True,
                   env={"GITHUB_OUTPUT": str(out), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
                        "PATH": "/usr/bin:/bin"})
    lines = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert json.loads(lines["shards"]) == ["s1", "s2"] and lines["builds-key"] == plan.builds_key
