"""SLURM calls that survive a busy controller: fake scontrol/sacct/squeue/sbatch on PATH that time
out N times and then answer, refuse for good, or (sbatch) queue the job and still time out.

Transient = what a busy controller answers (hpml.slurm.calls.TRANSIENT); it is retried, boundedly.
Permanent = anything else; it is not retried. sbatch is tried again only when the queue shows that
the first try queued nothing. The job script's `scontrol requeue` retries the same way in bash.
"""

import io
import json
import os
import subprocess

import pytest
from conftest import REPO, hpml

from hpml.core.runfiles import RunDir

ENV_SH = REPO / "jobs" / "hpml-env.sh"
TIMEOUT = "Socket timed out on send/recv operation"
RUNNING = "JobId=77 JobState=RUNNING Reason=None Restarts=0 ExitCode=0:0 RunTime=00:01:00 NodeList=n1"
COMPLETED = "JobId=77 JobState=COMPLETED Reason=None Restarts=0 ExitCode=0:0 RunTime=00:09:00 NodeList=n1"


class Slurm:
    """Fake SLURM commands in a folder of their own; every call is logged (`calls`)."""

    def __init__(self, folder):
        self.bin = folder
        self.bin.mkdir()
        self.log = folder / "calls.log"

    def add(self, name, body):
        path = self.bin / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> "{self.log}"\n{body}\n')
        path.chmod(0o755)

    def sequence(self, name, steps):
        """Call n does steps[min(n, last)]: (exit code, stdout, stderr) or 'hang'."""
        body = [f'n=$(cat "{self.bin}/{name}.n" 2>/dev/null || echo 0); echo $((n + 1)) > "{self.bin}/{name}.n"']
        for i, step in enumerate(steps):
            test = "true" if i == len(steps) - 1 else f'[ "$n" -eq {i} ]'
            if step == "hang":
                action = "exec sleep 100"
            else:
                rc, out, err = step
                (self.bin / f"{name}.{i}.out").write_text(out + "\n" if out else "")
                (self.bin / f"{name}.{i}.err").write_text(err + "\n" if err else "")
                action = f'cat "{self.bin}/{name}.{i}.out"; cat "{self.bin}/{name}.{i}.err" >&2; exit {rc}'
            body.append(f"if {test}; then {action}; fi")
        self.add(name, "\n".join(body))

    def calls(self, name=None):
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if name is None or line.split()[0] == name]

    def env(self, **extra):
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "HPML_SLURM_DELAY": "0.01", **extra}


@pytest.fixture()
def slurm(tmp_path, monkeypatch):
    fake = Slurm(tmp_path / "bin")
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    return fake


def test_transient_failures_are_retried_boundedly_and_permanent_ones_not_at_all(slurm):
    from hpml.slurm.calls import TRANSIENT, is_transient, run_slurm

    assert all(is_transient(f"slurm_load_jobs error: {m.capitalize()}") for m in TRANSIENT)
    for permanent in ("Invalid job id specified", "Slurm accounting storage is disabled", "Invalid account"):
        assert not is_transient(f"error: {permanent}")
    waits = []
    slurm.sequence("scontrol", [(1, "", f"slurm_load_jobs error: {TIMEOUT}")] * 2 + [(0, RUNNING, "")])
    res = run_slurm(["scontrol", "-o", "show", "job", "77"], attempts=5, delay=2, sleep=waits.append)
    assert res.ok and res.stdout.strip() == RUNNING and res.tries == 3 and waits == [2, 4]
    assert len(slurm.calls("scontrol")) == 3
    slurm.sequence("sacct", [(1, "", "sacct: error: Problem talking to the database: Connection refused")])
    res = run_slurm(["sacct", "-j", "77"], attempts=4, delay=2, sleep=waits.append)
    assert (res.ok, res.transient, res.tries, len(slurm.calls("sacct"))) == (False, True, 4, 4)
    assert waits[2:] == [2, 4, 8]  # between the four tries, doubling
    slurm.sequence("squeue", [(1, "", "squeue: error: Invalid user: nobody2")])
    res = run_slurm(["squeue", "-u", "nobody2"], attempts=5, sleep=waits.append)
    assert (res.transient, res.tries, len(slurm.calls("squeue"))) == (False, 1, 1)
    slurm.sequence("sbatch", ["hang"])  # no answer at all: the call's own time limit, then retried
    res = run_slurm(["sbatch", "x"], attempts=2, timeout=0.3, sleep=waits.append)
    assert (res.timed_out, res.transient, len(slurm.calls("sbatch"))) == (True, True, 2)


def test_a_scontrol_time_out_is_not_a_missing_job(slurm):
    from hpml.slurm import query

    slurm.sequence("scontrol", [(1, "", f"slurm_load_jobs error: {TIMEOUT}")] * 2 + [(0, RUNNING, "")])
    info = query.query("77")
    assert (info.state, info.source, len(slurm.calls("scontrol"))) == ("RUNNING", "scontrol", 3)


def _run_dir(tmp_path, jobs):
    run = tmp_path / "run"
    RunDir(run).slurm.mkdir(parents=True)
    RunDir(run).submitted.write_text(json.dumps([{"time": "t", "kind": "run", "jobs": jobs}]))
    return run


@pytest.mark.parametrize("sacct", ["absent", "no accounting"])
def test_status_watch_goes_on_through_time_outs_and_says_what_it_saw(slurm, tmp_path, sacct):
    run = _run_dir(tmp_path, {"train": "77"})
    # refresh 1: running; refresh 2: three tries time out; refresh 3: completed (the watch ends)
    slurm.sequence(
        "scontrol", [(0, RUNNING, "")] + [(1, "", f"slurm_load_jobs error: {TIMEOUT}")] * 3 + [(0, COMPLETED, "")]
    )
    if sacct == "no accounting":
        slurm.sequence("sacct", [(1, "", "sacct: error: Slurm accounting storage is disabled")])
    proc = hpml("status", run, "--watch", "0.1", env=slurm.env(), timeout=60)
    out = proc.stdout
    assert "no SLURM commands here" not in out, out
    assert f"scontrol: slurm_load_jobs error: {TIMEOUT} (3 tries); showing last known state" in out, out
    assert out.count("RUNNING") == 2 and out.rstrip().endswith("training: not started")
    assert "COMPLETED" in out.split("showing last known state")[-1]
    assert "(try 1/3)" in proc.stderr and len(slurm.calls("scontrol")) == 5


def test_status_watch_is_bounded_when_slurm_never_answers(slurm, tmp_path, monkeypatch):
    from hpml.slurm import status

    run = _run_dir(tmp_path, {"train": "77"})
    slurm.sequence("scontrol", [(1, "", f"slurm_load_jobs error: {TIMEOUT}")])
    monkeypatch.setattr(status, "MAX_BLIND", 3, raising=False)
    stream = io.StringIO()
    status.show(run, watch=0.01, stream=stream)
    text = stream.getvalue()
    assert text.count(f"run {run}") == 3 and "no SLURM commands here" not in text
    assert "UNKNOWN" in text and f"{TIMEOUT} (3 tries); no state known yet" in text
    assert "SLURM answered nothing for 3 refreshes in a row" in text
    assert len(slurm.calls("scontrol")) == 9  # 3 tries in each of 3 refreshes


def _usage(run, rank, wall_s, rss_mb):
    doc = {"job": "77", "restart": 0, "rank": rank, "host": "n1", "start": 0, "end": wall_s, "wall_s": wall_s}
    doc.update(cpu_s=wall_s, max_rss_kb=int(rss_mb * 1024), cpus=1, gpus=1, exit=0, mem_per_node_mb=4000.0)
    RunDir(run).usage.mkdir(parents=True, exist_ok=True)
    (RunDir(run).usage / f"77.0.rank{rank}.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("failure", ["time-out message", "no answer"])
def test_efficiency_without_sacct_reports_time_and_memory_from_the_ranks(slurm, tmp_path, failure):
    run = _run_dir(tmp_path, {"train": "77"})
    (RunDir(run).slurm / "train.sbatch").write_text(
        "#!/bin/bash\n#SBATCH --job-name=hpml-train\n#SBATCH --time=00:30:00\n"
    )
    _usage(run, 0, 600.0, 1000)
    _usage(run, 1, 590.0, 1000)
    slurm.sequence("sacct", [(1, "", f"sacct: error: {TIMEOUT}")] if failure == "time-out message" else ["hang"])
    proc = hpml("efficiency", run, env=slurm.env(HPML_SLURM_ATTEMPTS="2", HPML_SLURM_TIMEOUT="0.5"), check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    why = (
        f"sacct: error: {TIMEOUT} (2 tries)"
        if failure == "time-out message"
        else "sacct: no answer (time-out) (2 tries)"
    )
    assert f"sacct, job 77: unavailable ({why})" in proc.stdout, proc.stdout
    assert "time (ranks, job 77): elapsed 00:10:00 = 33% of the 00:30:00 limit (#SBATCH --time)" in proc.stdout
    assert "completed: --time=00:12:00 would do (elapsed x 1.2)" in proc.stdout
    assert "memory (ranks, job 77): peak 2000 MB per node (its ranks' peaks summed) = 50% of the 4000 MB" in proc.stdout
    ranks = json.loads(RunDir(run).efficiency.read_text())["measured_by_ranks"]
    assert (ranks["time_efficiency"], ranks["memory_efficiency"], ranks["suggested_time"]) == (0.3333, 0.5, "00:12:00")
    assert len(slurm.calls("sacct")) == 2


def test_efficiency_from_sacct_gives_time_and_memory_efficiency(slurm, tmp_path):
    run = _run_dir(tmp_path, {"train": "77"})
    # JobID|State|ElapsedRaw|TimelimitRaw|AllocCPUS|TotalCPU|MaxRSS|ReqMem|AllocTRES|TRESUsageInAve|NTasks|NNodes
    rows = [
        "77|COMPLETED|1000|30|4|00:50:00||8000M|cpu=4,mem=8000M,node=1,gres/gpu=2|||1",
        "77.batch|COMPLETED|1000||4|00:01:00|100M||cpu=4,mem=8000M,node=1||1|1",
        "77.0|COMPLETED|990||4|00:49:00|1500M||cpu=4,mem=8000M,node=1||2|1",
    ]
    slurm.sequence("sacct", [(0, "\n".join(rows), "")])
    out = hpml("efficiency", run, env=slurm.env()).stdout
    assert "time (sacct, job 77): elapsed 00:16:40 = 56% of the 00:30:00 limit (sacct)" in out, out
    assert "completed: --time=00:20:00 would do" in out
    assert "memory (sacct, job 77): peak 3000 MB per node (largest task x tasks per node) = 38% of the 8000 MB" in out


def _job(tmp_path):
    from hpml.slurm.submit import Job

    script = tmp_path / "train.sbatch"
    script.write_text("#!/bin/bash\n")
    return Job("train", script, [])


def _queueing_sbatch(slurm, answers):
    """sbatch that queues the job (id 1000 + n, its --comment kept for squeue) or not, per call:
    answers[n] = (queued?, exit code, stderr); squeue lists the queue as `%F %k`."""
    queue = slurm.bin / "queue"
    cases = []
    for i, (queued, rc, err) in enumerate(answers):
        test = "true" if i == len(answers) - 1 else f'[ "$n" -eq {i} ]'
        submit = f'echo "$((1000 + n)) $comment" >> "{queue}"; ' if queued else ""
        reply = 'echo "$((1000 + n))"; exit 0' if rc == 0 else f'echo "sbatch: error: {err}" >&2; exit {rc}'
        cases.append(f"if {test}; then {submit}{reply}; fi")
    slurm.add(
        "sbatch",
        f'n=$(cat "{slurm.bin}/sbatch.n" 2>/dev/null || echo 0); echo $((n + 1)) > "{slurm.bin}/sbatch.n"\n'
        'comment=""; for a in "$@"; do case "$a" in --comment=*) comment=${a#--comment=};; esac; done\n'
        + "\n".join(cases),
    )
    slurm.add("squeue", f'cat "{queue}" 2>/dev/null; exit 0')
    return queue


def test_sbatch_that_queued_the_job_but_timed_out_is_not_submitted_twice(slurm, tmp_path):
    from hpml.slurm.submit import submit

    queue = _queueing_sbatch(slurm, [(True, 1, f"Batch job submission failed: {TIMEOUT}"), (True, 0, "")])
    job = _job(tmp_path)
    assert submit([job], show=lambda *a, **k: None) == {"train": "1000"}
    assert queue.read_text().splitlines() == [f"1000 {job.tag}"]  # one job, the real one
    assert len(slurm.calls("sbatch")) == 1 and len(slurm.calls("squeue")) == 1


def test_sbatch_is_tried_again_only_after_the_queue_shows_nothing(slurm, tmp_path):
    from hpml.slurm.submit import submit

    refused = "Batch job submission failed: Unable to contact slurm controller (connect failure)"
    queue = _queueing_sbatch(slurm, [(False, 1, refused), (True, 0, "")])
    job = _job(tmp_path)
    assert submit([job], show=lambda *a, **k: None) == {"train": "1001"}
    assert queue.read_text().splitlines() == [f"1001 {job.tag}"]
    assert [c.split()[0] for c in slurm.calls()] == ["sbatch", "squeue", "sbatch", "squeue"]  # the last: no twin


def test_every_sbatch_line_carries_its_tag_and_a_refusal_is_tried_once(slurm, tmp_path):
    from hpml.slurm.submit import SubmitError, submit

    _queueing_sbatch(slurm, [(False, 1, "Batch job submission failed: Invalid account or account/partition")])
    job = _job(tmp_path)
    with pytest.raises(SubmitError, match="sbatch refused the train job: .*Invalid account"):
        submit([job], show=lambda *a, **k: None)
    (call,) = slurm.calls()
    assert call.startswith("sbatch --parsable --comment=hpml:") and len(job.tag) > 10
    assert f"--comment={job.tag}" in call.split() and job.tag != _job(tmp_path).tag


def test_sbatch_tries_are_bounded_and_an_unreadable_queue_stops_them(slurm, tmp_path, monkeypatch):
    from hpml.slurm.submit import SubmitError, submit

    monkeypatch.setenv("HPML_SLURM_ATTEMPTS", "3")
    _queueing_sbatch(slurm, [(False, 1, f"Batch job submission failed: {TIMEOUT}")])
    with pytest.raises(SubmitError, match="(?s)did not answer the train job: .*no job hpml:\\w+ in the queue after 3"):
        submit([_job(tmp_path)], show=lambda *a, **k: None)
    assert len(slurm.calls("sbatch")) == 3 and len(slurm.calls("squeue")) == 3
    slurm.log.unlink()
    (slurm.bin / "sbatch.n").unlink()
    slurm.sequence("squeue", [(1, "", f"squeue: error: {TIMEOUT}")])
    with pytest.raises(SubmitError, match="the queue could not be read .* look for it"):
        submit([_job(tmp_path)], show=lambda *a, **k: None)
    assert len(slurm.calls("sbatch")) == 1 and len(slurm.calls("squeue")) == 3  # squeue's own tries


def _requeue(tmp_path, slurm, steps, **env):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    RunDir(run).marker.write_text("job=77 restart=0\nsignal=SIGUSR1 epoch=1 step=2\n")
    slurm.sequence("scontrol", steps)
    slurm.add("sleep", "exit 0")  # the back-off, recorded in the call log instead of waited
    script = f'set -euo pipefail; source "{ENV_SH}"; HPML_GOT_USR1=1 HPML_GOT_TERM=0; _hpml_requeue_or_exit {run} 0'
    proc = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": f"{slurm.bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "77", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_requeue_retries_a_busy_controller_boundedly_and_a_refusal_once(slurm, tmp_path):
    busy = (1, "", f"scontrol: error: {TIMEOUT}")
    code, out = _requeue(tmp_path, slurm, [busy, busy, (0, "", "")])
    assert code == 0 and len(slurm.calls("scontrol")) == 3, out
    assert f"scontrol requeue 77 failed (try 2/5): scontrol: error: {TIMEOUT}" in out
    slurm.log.unlink()
    (slurm.bin / "scontrol.n").unlink()
    code, out = _requeue(tmp_path, slurm, [busy])
    assert code == 75 and slurm.calls("scontrol") == ["scontrol requeue Incomplete 77"] * 5, out
    assert [c for c in slurm.calls("sleep")] == ["sleep 2", "sleep 4", "sleep 8", "sleep 16"]
    assert "the controller did not answer 5 tries to requeue 77; giving up" in out and "(try 5/5)" in out
    slurm.log.unlink()
    code, out = _requeue(tmp_path, slurm, [(1, "", "scontrol: error: Job/step already completing or completed")])
    assert code == 75 and len(slurm.calls("scontrol")) == 1 and "refused to requeue" in out, out


def test_bash_and_python_agree_on_what_is_transient():
    from hpml.slurm.calls import TRANSIENT

    messages = [f"scontrol: error: {m.capitalize()}" for m in TRANSIENT] + ["scontrol: error: Invalid job id specified"]
    checks = "; ".join(f"_hpml_slurm_transient '{m}' && echo yes || echo no" for m in messages)
    proc = subprocess.run(["bash", "-c", f'source "{ENV_SH}"; {checks}'], capture_output=True, text=True, timeout=30)
    assert proc.stdout.split() == ["yes"] * len(TRANSIENT) + ["no"], proc.stderr
