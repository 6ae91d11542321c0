"""The requeue policy of jobs/hpml-env.sh, case by case, in real bash.

`scontrol` and `scancel` are stand-ins that record their arguments: these cases need a job
that SLURM is running, which only tests/slurm/test_slurm.py has (and there the same functions run
under a real cluster end to end). Here every branch of the decision is pinned down.
"""

import os
import subprocess

import pytest
from conftest import REPO

from hpml.core.jobid import job_identity
from hpml.core.runfiles import RunDir
from hpml.train.preemption import REQUEUE_EXIT_CODE

ENV_SH = REPO / "jobs" / "hpml-env.sh"


@pytest.fixture()
def stubs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    for name in ("scontrol", "scancel"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit ${{STUB_RC:-0}}\n')
        (bin_dir / name).chmod(0o755)
    return bin_dir, calls


def bash(stubs, script, slurm_env, **extra):
    bin_dir, calls = stubs
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", **slurm_env, **extra}
    proc = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{ENV_SH}"; {script}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    made = calls.read_text().splitlines() if calls.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, made


def decide(stubs, run, marker, usr1=1, term=0, rc=0, env=None, **extra):
    env = env or {"SLURM_JOB_ID": "77"}
    if marker is not None:
        RunDir(run).marker.write_text(f"{marker}\nsignal=SIGUSR1 epoch=1 step=2\n")
    script = f"HPML_GOT_USR1={usr1} HPML_GOT_TERM={term}; _hpml_requeue_or_exit {run} {rc}"
    return bash(stubs, script, env, **extra)


def test_requeues_only_what_this_run_checkpointed(stubs, tmp_path):
    code, out, calls = decide(stubs, tmp_path, "job=77 restart=0", rc=REQUEUE_EXIT_CODE)
    assert (code, calls) == (0, ["scontrol requeue Incomplete 77"]), out
    assert "requeueing job 77 (restart 1)" in out


def test_a_stale_marker_is_never_requeued(stubs, tmp_path):
    code, out, calls = decide(stubs, tmp_path, "job=76 restart=0", rc=1)
    assert (code, calls) == (1, []), out
    assert "ignoring a stale" in out and "this run (job=77 restart=0) did not write it" in out
    # the same job, an earlier run of it
    code, out, calls = decide(
        stubs, tmp_path, "job=77 restart=0", rc=1, env={"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "1"}
    )
    assert (code, calls) == (1, []), out


def test_no_signal_or_a_cancellation_means_no_requeue(stubs, tmp_path):
    code, out, calls = decide(stubs, tmp_path, "job=77 restart=0", usr1=0, rc=REQUEUE_EXIT_CODE)
    assert (code, calls) == (REQUEUE_EXIT_CODE, []), out
    assert "no preemption signal reached this job" in out
    code, out, calls = decide(stubs, tmp_path, "job=77 restart=0", usr1=1, term=1, rc=REQUEUE_EXIT_CODE)
    assert (code, calls) == (REQUEUE_EXIT_CODE, []), out


def test_signal_without_a_checkpoint_fails_with_the_ranks_code(stubs, tmp_path):
    code, out, calls = decide(stubs, tmp_path, None, rc=134)
    assert (code, calls) == (134, []), out
    assert "this run wrote no checkpoint marker (exit 134)" in out


def test_restart_cap(stubs, tmp_path):
    env = {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "2"}
    code, out, calls = decide(stubs, tmp_path, "job=77 restart=2", env=env, HPML_MAX_RESTARTS="2")
    assert (code, calls) == (REQUEUE_EXIT_CODE, []), out
    assert "restart cap reached: 2 restart(s), max_restarts 2 (cluster profile)" in out
    code, out, calls = decide(stubs, tmp_path, "job=77 restart=2", env=env, HPML_MAX_RESTARTS="3")
    assert (code, calls) == (0, ["scontrol requeue Incomplete 77"]), out


def test_refused_requeue_ends_the_job(stubs, tmp_path):
    code, out, calls = decide(stubs, tmp_path, "job=77 restart=0", STUB_RC="1")
    assert (code, calls) == (REQUEUE_EXIT_CODE, ["scontrol requeue Incomplete 77"]), out
    assert "refused to requeue" in out


def test_array_tasks_are_named_task_by_task(stubs, tmp_path):
    """The bare array job id would name (requeue, signal) every task of the array."""
    env = {"SLURM_JOB_ID": "72", "SLURM_ARRAY_JOB_ID": "70", "SLURM_ARRAY_TASK_ID": "2"}
    code, out, calls = decide(stubs, tmp_path, job_identity(env), env=env)
    assert job_identity(env) == "job=70_2 restart=0"
    assert (code, calls) == (0, ["scontrol requeue Incomplete 70_2"]), out
    # the trap forwards USR1 to the steps of this task only
    (tmp_path / "calls.txt").unlink()
    code, out, calls = bash(stubs, "hpml_preemption_traps; HPML_STEP=$$; kill -USR1 $$; echo after", env)
    assert (code, calls) == (0, ["scancel --signal=USR1 70_2"]), out
    assert "asking every rank to checkpoint" in out and "after" in out


ENVS = [
    {"SLURM_JOB_ID": "5"},
    {"SLURM_JOB_ID": "5", "SLURM_RESTART_COUNT": "3"},
    {"SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "8", "SLURM_ARRAY_TASK_ID": "0"},
]


@pytest.mark.parametrize("env", ENVS)
def test_python_and_bash_name_a_run_alike(stubs, env):
    code, out, _ = bash(stubs, 'echo "job=$(hpml_self_id) restart=${SLURM_RESTART_COUNT:-0}"', env)
    assert out.strip() == job_identity(env)
