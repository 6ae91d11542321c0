"""Issue 24: hostile values never change what a rendered job script does.

A job script is read twice: by sbatch, for its `#SBATCH` lines, and by bash. `sbatch_options`
below reads the directives as sbatch does (SchedMD/slurm, src/sbatch/opt.c: `_opt_batch_script`
and `get_argument`), independently of hpml's renderer: only lines starting with `#SBATCH`, up to
the first line that is neither blank nor a comment; each line split at whitespace, '...' and
"..." grouping, \\ escaping, an unquoted # ending the line, an argument starting with `:` or an
unmatched quote fatal; and (sbatch 17.11-20.11) "hetjob"/"packjob" anywhere on a line starting a
new job component. Each script also goes through `bash -n`, and its profile block (the values
hpml writes) runs in bash with a payload that would create a marker file if anything expanded.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, hpml

from hpml.core.config import ConfigError
from hpml.slurm import render as render_module
from hpml.slurm import submit, sweep
from hpml.slurm.profiles import load_profile
from hpml.slurm.render import render

DEMO = REPO / "configs" / "demo.yaml"
C_SPACE = " \t\n\v\f\r"  # C's isspace() in the C locale
JOB_ID = "4242"


class SbatchRefuses(Exception):
    """What sbatch's parser stops with (fatal) or splits the job at."""


def _arguments(rest: str) -> list[str]:
    """get_argument(), applied until it returns nothing (SLURM 21.08+: `\\ ` keeps a space)."""
    out: list[str] = []
    i, n = 0, len(rest)
    while True:
        while i < n and rest[i] in C_SPACE:
            i += 1
        if i < n and rest[i] == ":":
            raise SbatchRefuses(f"Unexpected `:` in [{rest}]")
        word: list[str] = []
        quote, escape = "", False
        while i < n and (quote or rest[i] not in C_SPACE):
            ch = rest[i]
            if escape:
                escape = False
            elif ch == "\\":
                i += 1
                if i < n and rest[i] == " ":
                    word.append(" ")
                    i += 1
                else:
                    escape = True
                continue
            elif quote:
                if ch == quote:
                    quote = ""
                    i += 1
                    continue
            elif ch in "\"'":
                quote = ch
                i += 1
                continue
            elif ch == "#":  # an unquoted #: the rest of the line is a comment
                break
            word.append(ch)
            i += 1
        if quote:
            raise SbatchRefuses(f"Unmatched `{quote}` in [{rest}]")
        if not word:  # get_argument returned NULL: sbatch reads nothing more of this line
            return out
        out.append("".join(word))


def sbatch_options(script: str) -> list[str]:
    """The options sbatch takes from a script's #SBATCH lines, in order."""
    options: list[str] = []
    for line in script.split("\n"):  # next_line(): lines end at \n only
        if not line.startswith("#SBATCH"):
            stripped = line.lstrip(C_SPACE)
            if stripped and not stripped.startswith("#"):
                break  # the first command: no #SBATCH line after it is read
            continue
        rest = line[len("#SBATCH") :]
        if re.search("hetjob|packjob", rest, re.I):
            raise SbatchRefuses(f"a new heterogeneous job component at [{line}]")
        options += _arguments(rest)
    return options


def slurm_filename(pattern: str, job_name: str) -> str:
    """The log file SLURM opens for --output=pattern (expand_stdio_fields): `\\` anywhere turns
    every replacement off; %% is %, %x the job name, %j / %A the job id, %a the task."""
    if "\\" in pattern:
        return pattern.replace("\\", "")
    table = {"%": "%", "x": job_name, "j": JOB_ID, "A": JOB_ID, "a": "7"}
    return re.sub(r"%([%xjAa])", lambda m: table[m.group(1)], pattern)


def bash_syntax_ok(script: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def profile_block(script: str) -> str:
    start, end = script.index("# >>> profile\n"), script.index("# <<< profile\n")
    return script[start:end]


def run_profile_block(script: str, names: list[str], cwd: Path) -> dict[str, str]:
    """Run the block hpml rendered in bash; return what the named variables hold afterwards."""
    probe = profile_block(script) + "".join(f'printf "%s\\0" "${{{name}}}"\n' for name in names)
    proc = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, cwd=cwd, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    )
    assert proc.returncode == 0, proc.stderr
    return dict(zip(names, proc.stdout.split("\0")[:-1], strict=True))


def expected_train_options(output: str, array: str | None = None) -> list[str]:
    """configs/clusters/snellius.yaml's training job, written out by hand."""
    options = [
        "--job-name=hpml-sweep" if array else "--job-name=hpml-train",
        "--time=24:00:00",
        f"--output={output}",
        "--partition=gpu_a100",
        "--nodes=1",
        "--ntasks-per-node=4",
        "--cpus-per-task=18",
        "--gpus-per-node=4",
        "--constraint=scratch-node",
        "--signal=B:USR1@300",
        "--requeue",
        "--open-mode=append",
    ]
    return [*options, f"--array={array}"] if array else options


def write_profile(tmp_path: Path, **changes) -> Path:
    p = yaml.safe_load((REPO / "configs/clusters/snellius.yaml").read_text())
    p.update(changes)
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def marker_payload(tmp_path: Path) -> tuple[Path, str]:
    marker = tmp_path / "pwned"
    return marker, f"touch {marker}"


# ---- the run directory: the one path in an #SBATCH line ----------------------------------------

# Each breaks (or moves) the log with the renderer that pasted the path bare. `;`, `$(...)`,
# backticks and `!` mean nothing to sbatch; they come with a space, which does.
QUOTABLE_DIRS = {
    "space": "my run",
    "hash": "run#2",
    "single-quote": "bob's",
    "double-quote": 'the"best"run',
    "percent": "lr50%j%%x",
    "subshell-semicolon-backticks": "x;$(PAYLOAD);`PAYLOAD`;!$HOME",
    "unicode-nbsp-and-space": "Zürich\u00a0λ run",
    "long-but-not-too-long": "r" * 200 + " " + "s" * 200,
}


@pytest.mark.parametrize("stage", ["train", "sweep"])
@pytest.mark.parametrize("name", QUOTABLE_DIRS.values(), ids=QUOTABLE_DIRS.keys())
def test_a_hostile_run_dir_reaches_sbatch_as_one_intact_output_path(tmp_path, name, stage):
    marker, payload = marker_payload(tmp_path)
    log_dir = tmp_path / name.replace("PAYLOAD", payload) / "slurm"
    array = "0-3%2" if stage == "sweep" else None
    script = render(stage, load_profile("snellius"), log_dir, array=array)
    bash_syntax_ok(script)
    options = sbatch_options(script)
    outputs = [o for o in options if o.startswith("--output=")]
    assert len(outputs) == 1, options
    assert options == expected_train_options(outputs[0].removeprefix("--output="), array)
    log_name = "hpml-sweep-4242_7.out" if array else "hpml-train-4242.out"
    job = "hpml-sweep" if array else "hpml-train"
    assert slurm_filename(outputs[0].removeprefix("--output="), job) == f"{log_dir}/{log_name}"
    run_profile_block(script, ["HPML_MAX_RESTARTS"], tmp_path)
    assert not marker.exists()


REFUSED_DIRS = {
    "newline-command": "run\n#!/bin/bash\ntouch pwned",
    "newline-directive": "run\n#SBATCH --partition=other",
    "carriage-return": "run\rx",
    "tab": "run\tx",
    "escape": "run\x1b[31m",
    "nul": "run\x00x",
    "next-line-u0085": "run\x85x",
    "line-separator-u2028": "run\u2028x",
    "bidi-override-u202e": "run\u202etxt.exe",
    "zero-width-u200b": "run\u200bx",
    "backslash": "run\\%j",
    "hetjob": "the hetjob run",
    "packjob": "PackJob",
    "very-long": "x" * 5000,
}


@pytest.mark.parametrize("name", REFUSED_DIRS.values(), ids=REFUSED_DIRS.keys())
def test_a_run_dir_sbatch_cannot_take_is_refused_naming_the_option(tmp_path, name):
    with pytest.raises(ConfigError, match="#SBATCH --output"):
        render("train", load_profile("snellius"), Path("/runs") / name / "slurm")
    if "\x00" in name:
        return  # the OS itself refuses such a path, before hpml looks at it
    run_dir = tmp_path / name
    with pytest.raises(ConfigError, match="--run-dir"):
        submit.plan("train", _demo_config(tmp_path), load_profile("snellius"), run_dir, "val")
    spec = sweep.SweepSpec(grid={"train.lr": [1e-3, 2e-3]})
    with pytest.raises(ConfigError, match="--run-dir"):
        sweep.plan(spec, DEMO, [], load_profile("snellius"), run_dir)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def _demo_config(tmp_path):
    from hpml.core.config import load_config

    return load_config(DEMO, [f"data.shards={tmp_path / 'shards'}"])


# ---- profile strings: refused when the profile is loaded, and again when a script is rendered -----

PROFILE_REFUSALS = [
    ("partition", "gpu_a100\n#SBATCH --qos=high", "--partition"),
    ("partition", "gpu a100", "--partition"),
    ("partition", "gpu$(PAYLOAD)", "--partition"),
    ("partition", "gpu;PAYLOAD", "--partition"),
    ("cpu_partition", "genoa'", "--partition"),
    ("cpu_partition", 'genoa"', "--partition"),
    ("account", "prj#1", "--account"),
    ("account", "`PAYLOAD`", "--account"),
    ("account", "hetjob", "--account"),
    ("constraint", "scratch-node --exclusive", "--constraint"),
    ("constraint", "scratch-node\\", "--constraint"),
    ("mail_user", "me@uni.nl --begin=now+1year", "--mail-user"),
    ("mail_user", "me@uni.nl\n#SBATCH --requeue", "--mail-user"),
    ("mail_user", "$(PAYLOAD)@uni.nl", "--mail-user"),
    ("mail_user", "me@uni.nl%", "--mail-user"),
    ("name", "snellius\ntouch pwned", "name"),
    ("name", "snellius' ; PAYLOAD ; '", "name"),
    ("container", "/images/hpml.sif\u202e", "container"),
    ("scratch", "/scratch\x1b[0m", "scratch"),
    ("modules", ["2023", "CUDA/12.1 ; PAYLOAD"], "modules[1]"),
    ("modules", ["*"], "modules[0]"),
    ("time", {"preprocess": "01:00:00", "train": "24:00:00\n", "evaluate": "01:00:00"}, "time.train"),
    ("time", {"preprocess": "01:00:00", "train": " 24:00:00", "evaluate": "01:00:00"}, "--time"),
    ("env", {"A B": "1"}, "env"),
    ("env", {"1ST": "1"}, "env"),
    ("env", {"X;PAYLOAD;Y": "1"}, "env"),
    ("env", {"$(PAYLOAD)": "1"}, "env"),
    ("env", {"OK": "line\nbreak"}, "env.OK"),
    ("env", {"OK": "v" * 5000}, "env.OK"),
    ("network", {"NCCL_A-B": "1"}, "network"),
    ("network", {"NCCL_X=1 PAYLOAD": "1"}, "network"),
]


def _ids(cases):
    return [f"{key}-{i}" for i, (key, *_) in enumerate(cases)]


def _with_payload(value, payload):
    if isinstance(value, str):
        return value.replace("PAYLOAD", payload)
    if isinstance(value, list):
        return [_with_payload(v, payload) for v in value]
    return {_with_payload(k, payload): _with_payload(v, payload) for k, v in value.items()}


@pytest.mark.parametrize("key, value, names", PROFILE_REFUSALS, ids=_ids(PROFILE_REFUSALS))
def test_a_hostile_profile_is_refused_when_loaded_naming_the_key_and_file(tmp_path, key, value, names):
    marker, payload = marker_payload(tmp_path)
    path = write_profile(tmp_path, **{key: _with_payload(value, payload)})
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    message = str(err.value)
    assert str(path) in message and key in message and names in message, message
    assert not marker.exists()


@pytest.mark.parametrize("key, value, names", PROFILE_REFUSALS, ids=_ids(PROFILE_REFUSALS))
def test_a_hostile_profile_built_in_code_is_refused_when_rendered(tmp_path, key, value, names):
    marker, payload = marker_payload(tmp_path)
    profile = dataclasses.replace(load_profile("snellius"), **{key: _with_payload(value, payload)})
    with pytest.raises(ConfigError) as err:
        render("train", profile, tmp_path / "run" / "slurm")
    assert key in str(err.value) and names in str(err.value), str(err.value)
    assert not marker.exists()


JOB_NAMES = ["hpml-train\n#SBATCH --requeue", "hpml train", "hpml#x", "hpml'x", "$(touch pwned)", "x" * 5000, ""]


@pytest.mark.parametrize("value", JOB_NAMES, ids=[f"job-name-{i}" for i in range(len(JOB_NAMES))])
def test_a_hostile_job_name_is_refused_naming_the_option(value):
    directive = getattr(render_module, "directive", None)
    assert directive is not None, "no single writer of #SBATCH lines (hpml.slurm.render.directive)"
    assert directive("--job-name", "hpml-train") == "#SBATCH --job-name=hpml-train"
    with pytest.raises(ConfigError, match="#SBATCH --job-name"):
        directive("--job-name", value)


# ---- values that reach bash: inert, whatever they hold ---------------------------------------------

# Each holds a `$`: the quoting the renderer had expanded `$(...)` and `$VAR` inside double quotes.
SHELL_VALUES = {
    "subshell": "$(PAYLOAD)",
    "backticks-and-var": "`PAYLOAD` $HOME",
    "single-quote-subshell": "it's $(PAYLOAD) 'quoted'",
    "double-quote-subshell": '"$(PAYLOAD)"',
    "escaped-dollar": "\\$(PAYLOAD) \\",
    "history-and-params": "!$ !! ${PATH:0:1} $((6*7)) $$",
    "semicolon-hash-percent": "x; PAYLOAD # 100% $USER",
    "nested-quote-idiom": "'\\'' $(PAYLOAD) '\"'\"'",
}


@pytest.mark.parametrize("value", SHELL_VALUES.values(), ids=SHELL_VALUES.keys())
def test_hostile_shell_values_stay_text_in_bash(tmp_path, value):
    marker, payload = marker_payload(tmp_path)
    value = value.replace("PAYLOAD", payload)
    profile = dataclasses.replace(
        load_profile("snellius"),
        env={"HOSTILE": value},
        network={"NCCL_HOSTILE": value},
        container=f"/images/{value}.sif",
        scratch=value,
        cpu_bind=value,
        mpi=value,
    )
    for stage in ("preprocess", "train", "evaluate"):
        script = render(stage, profile, tmp_path / "run" / "slurm", binds=["/data/a b", "/data/it's"])
        bash_syntax_ok(script)
        names = ["HOSTILE", "NCCL_HOSTILE", "HPML_CONTAINER", "HPML_CPU_BIND", "HPML_MPI", "HPML_BINDS"]
        got = run_profile_block(script, names + (["HPML_STAGE_DIR"] if stage == "train" else []), tmp_path)
        assert got.pop("HPML_BINDS") == "/data/a b,/data/it's"
        assert set(got.values()) == {value, f"/images/{value}.sif"}, got
        assert got["HPML_CONTAINER"] == f"/images/{value}.sif"
        assert not marker.exists(), f"{stage}: a value was executed:\n{profile_block(script)}"
        plain = render(stage, load_profile("snellius"), tmp_path / "run" / "slurm")
        assert sbatch_options(script) == sbatch_options(plain)  # shell values never touch a directive


def test_a_rendered_job_runs_with_hostile_values_and_passes_them_on_intact(tmp_path):
    """The whole evaluate script under bash, with stand-ins for srun and module: the exported
    value reaches the launched command's environment exactly, and nothing ran on the way."""
    marker, payload = marker_payload(tmp_path)
    value = f"it's $(${{IFS}}{payload}) `{payload}` $HOME !!"
    stub = tmp_path / "bin"
    stub.mkdir()
    seen = tmp_path / "seen"
    (stub / "srun").write_text(f'#!/bin/bash\nprintf "%s\\0" "$HOSTILE" "$@" > {seen}\n')
    (stub / "srun").chmod(0o755)
    profile = dataclasses.replace(load_profile("snellius"), env={"HOSTILE": value}, modules=[])
    run_dir = tmp_path / "the run's dir $(x)"
    script = tmp_path / "evaluate.sbatch"
    script.write_text(render("evaluate", profile, run_dir / "slurm"))
    proc = subprocess.run(
        ["bash", str(script), str(run_dir), "--split", "test"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": f"{stub}:/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fields = seen.read_text().split("\0")[:-1]
    assert fields[0] == value
    assert fields[-5:] == ["evaluate", "--run-dir", str(run_dir), "--split", "test"]
    assert not marker.exists()


# ---- container binds, the sweep cap, and the command line end to end ------------------------------


@pytest.mark.parametrize("bad", ["runs,old", "runs:2024-01-01T12:00"], ids=["comma", "colon"])
def test_container_bind_paths_with_comma_or_colon_are_refused(tmp_path, bad):
    path = tmp_path / bad
    path.mkdir()
    binds = render_module.container_binds([path])
    container = dataclasses.replace(load_profile("snellius"), container="/images/hpml.sif")
    with pytest.raises(ConfigError, match=r"container bind .*Apptainer's --bind list"):
        render("train", container, path / "slurm", binds)
    # Without a container nothing is bound, and such a run directory is fine.
    bash_syntax_ok(render("train", load_profile("snellius"), path / "slurm", binds))


def test_a_sweep_larger_than_slurms_default_max_array_size_is_refused(tmp_path):
    assert len(sweep.points({"train.lr": list(range(1001))})) == 1001  # tasks 0-1000: the most SLURM takes
    grid = [f"train.lr={','.join(str(i) for i in range(40))}", f"train.epochs={','.join(str(i) for i in range(30))}"]
    with pytest.raises(ConfigError, match=r"1200 points .*larger than 1001, SLURM's default MaxArraySize"):
        sweep.load_spec(None, grid, None)
    with pytest.raises(ConfigError, match="MaxArraySize"):
        sweep.points({"train.lr": list(range(40)), "train.epochs": list(range(30))})
    proc = hpml(
        "submit", "sweep", "--cluster", "local", "--config", DEMO, "--run-dir", tmp_path / "sw",
        *[arg for g in grid for arg in ("--grid", g)], "--dry-run",
        check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2 and "MaxArraySize" in proc.stderr, proc.stderr
    assert not (tmp_path / "sw").exists()


def test_submit_dry_run_with_hostile_run_dir_overrides_and_profile(tmp_path):
    """`hpml submit train --dry-run`: a hostile run directory, shard path (an override that becomes a
    container bind) and profile; the kept script is exactly what was meant, to sbatch and bash."""
    marker, payload = marker_payload(tmp_path)
    shards = tmp_path / "sh ards 'q' x#1 `id` 5%"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    run_dir = tmp_path / "run 'a' \"b\" #c %j ;d"
    profile = write_profile(
        tmp_path,
        container=f"/images/$({payload}).sif",
        env={"HOSTILE": f"$({payload})"},
        mail_user="me@uni.nl",
        mail_type="END,FAIL",
    )
    args = ["submit", "train", "--cluster", profile, "--config", DEMO, "--run-dir", run_dir]
    sets = ["--set", f"data.shards={shards}", "--set", f"data.split_dir={shards}"]  # split_dir: no stray bind
    proc = hpml(*args, *sets, "--dry-run", env={"PATH": "/usr/bin:/bin"})
    script = (run_dir / "slurm" / "train.sbatch").read_text()
    assert script in proc.stdout
    bash_syntax_ok(script)
    options = sbatch_options(script)
    output = options[2].removeprefix("--output=")
    expected = [*expected_train_options(output), "--mail-user=me@uni.nl", "--mail-type=END,FAIL"]
    assert options == expected
    assert slurm_filename(output, "hpml-train") == f"{run_dir}/slurm/hpml-train-4242.out"
    got = run_profile_block(script, ["HOSTILE", "HPML_CONTAINER", "HPML_BINDS"], tmp_path)
    assert got["HOSTILE"] == f"$({payload})" and got["HPML_CONTAINER"] == f"/images/$({payload}).sif"
    assert set(got["HPML_BINDS"].split(",")) == {str(run_dir), str(shards), str(REPO)}
    assert not marker.exists()


@pytest.mark.parametrize(
    "run_name, shards_name, extra, named",
    [
        ("run", "shards", ["--mail-user", "me@uni.nl\n#SBATCH --requeue"], "--mail-user"),
        ("run", "shards", ["--mail-user", "me@uni.nl --begin=tomorrow"], "--mail-user"),
        ("run\n#SBATCH --partition=other", "shards", [], "--run-dir"),
        ("run", "shards,old", [], "container bind"),
        ("run", "shards:old", [], "container bind"),
    ],
    ids=["mail-user-newline", "mail-user-space", "run-dir-newline", "shards-with-comma", "shards-with-colon"],
)
def test_submit_refuses_hostile_command_line_values_naming_them(tmp_path, run_name, shards_name, extra, named):
    shards = tmp_path / shards_name
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    cluster = write_profile(tmp_path, container="/images/hpml.sif")
    proc = hpml(
        "submit", "train", "--cluster", cluster, "--config", DEMO, "--run-dir", tmp_path / run_name,
        "--set", f"data.shards={shards}", "--set", f"data.split_dir={shards}", *extra, "--dry-run",
        check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "#SBATCH" not in proc.stdout
