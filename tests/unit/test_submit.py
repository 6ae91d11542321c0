"""`hpml submit` without a cluster: rendered scripts, profiles, dry runs, an installed copy."""

import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO, hpml, sets

from hpml.core.config import ConfigError
from hpml.slurm.profiles import load_profile, time_seconds
from hpml.slurm.render import container_binds, render

DEMO = REPO / "configs" / "demo.yaml"


def write_profile(tmp_path, **changes):
    p = yaml.safe_load((REPO / "configs/clusters/snellius.yaml").read_text())
    p.update(changes)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_job_templates_are_valid_bash_with_real_directives():
    for script in (REPO / "jobs").glob("*.sbatch"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
        text = script.read_text()
        assert "#SBATCH --" in text and "##SBATCH" not in text  # the seed's were commented out
    assert subprocess.run(["bash", "-n", str(REPO / "jobs/hpml-env.sh")]).returncode == 0


def test_all_shipped_profiles_load():
    names = sorted(p.stem for p in (REPO / "configs/clusters").glob("*.yaml"))
    assert {"local", "snellius", "snellius_h100"} <= set(names)
    for name in names:
        load_profile(name)
    h100 = load_profile("snellius_h100")
    assert (h100.partition, h100.cpus_per_task, h100.gpus_per_node) == ("gpu_h100", 16, 4)


def test_rendered_snellius_train_script(tmp_path):
    p = load_profile("snellius")
    text = render("train", p, tmp_path, binds=["/projects/x", "/home/u/hpml"])
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    sbatch = re.findall(r"^#SBATCH (\S+)", text, re.M)
    assert "--constraint=scratch-node" in sbatch and "--cpus-per-task=18" in sbatch and "--gpus-per-node=4" in sbatch
    assert "--signal=B:USR1@300" in sbatch and "--requeue" in sbatch
    assert "--exclusive" not in sbatch  # one node: shared nodes are fine
    assert "HPML_STAGE_DIR='$TMPDIR'" in text  # reaches every rank unexpanded
    assert "HPML_MAX_RESTARTS=5" in text and "export PMIX_MCA_gds=hash" in text
    assert "# >>> jobs/hpml-env.sh (inlined)" in text and 'source "${HPML_HOME}/jobs/hpml-env.sh"' not in text
    assert 'launch+=(--cpus-per-task="${SLURM_CPUS_PER_TASK}")' in text
    two = render(
        "train", load_profile(write_profile(tmp_path, nodes=2, mail_user="a@b.nl", mail_type="END,FAIL")), tmp_path
    )
    sbatch = re.findall(r"^#SBATCH (\S+)", two, re.M)
    assert "--exclusive" in sbatch and "--mail-user=a@b.nl" in sbatch and "--mail-type=END,FAIL" in sbatch


@pytest.mark.parametrize(
    "change, message",
    [
        ({"network": {"LD_PRELOAD": "x"}}, "network: LD_PRELOAD: only NCCL_"),
        ({"time": {"preprocess": "1:00:00", "train": "soon", "evaluate": "10"}}, "'soon' is not a SLURM time"),
        ({"signal_lead_s": 600, "time": {"preprocess": "10", "train": "00:10:00", "evaluate": "10"}}, "not shorter"),
        ({"mail_type": "END,SOMETIMES", "mail_user": "a@b"}, "mail_type: unknown SOMETIMES"),
        ({"mail_type": "END"}, "mail_type needs mail_user"),
        ({"cpus_per_gpu": 18}, "unknown key 'cpus_per_gpu'"),
    ],
)
def test_bad_profiles_name_the_key_and_file(tmp_path, change, message):
    path = write_profile(tmp_path, **change)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_slurm_time_formats():
    assert [time_seconds(t) for t in ("90", "1:30", "02:00:00", "1-0", "1-2:30", "1-00:00:10")] == [
        5400,
        90,
        7200,
        86400,
        95400,
        86410,
    ]


def test_binds_resolve_links_and_bind_what_does_not_exist_yet_through_its_parent(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    binds = container_binds([tmp_path / "link", tmp_path / "data" / "shards-to-come", "$TMPDIR", None])
    assert binds == [str((tmp_path / "data").resolve())]


def test_dry_run_prints_the_scripts_and_queues_nothing(tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    (split / "train.txt").write_text("")
    overrides = sets(f"data.split_dir={split}", f"data.shards={tmp_path / 'shards'}")
    proc = hpml(
        "submit",
        "pipeline",
        "--cluster",
        "snellius",
        "--config",
        DEMO,
        "--run-dir",
        tmp_path / "run",
        *overrides,
        "--dry-run",
        "--mail-user",
        "me@uni.nl",
        "--mail-type",
        "FAIL",
        env={"PATH": "/usr/bin:/bin"},
    )
    out = proc.stdout
    for stage in ("preprocess", "train", "evaluate"):
        assert f"# ---- {tmp_path / 'run' / 'slurm' / stage}.sbatch ----" in out
    assert out.count("#SBATCH --mail-user=me@uni.nl") == 3
    assert "sbatch --parsable '--dependency=afterok:<preprocess job id>' --kill-on-invalid-dep=yes" in out
    assert not (tmp_path / "run" / "slurm" / "submitted.json").exists()


def test_submit_checks_inputs_before_queueing(tmp_path):
    proc = hpml(
        "submit",
        "train",
        "--cluster",
        "local",
        "--config",
        DEMO,
        "--run-dir",
        tmp_path / "run",
        "--set",
        f"data.shards={tmp_path}",
        "--dry-run",
        check=False,
    )
    assert proc.returncode == 2 and f"{tmp_path}/manifest.json not found" in proc.stderr
    proc = hpml("submit", "train", "--cluster", "nosuch", "--config", DEMO, "--run-dir", tmp_path / "run", check=False)
    assert proc.returncode == 2 and "no such cluster profile (known: " in proc.stderr


def test_templates_and_profiles_ship_with_a_plain_install(tmp_path):
    """`pip install .` (no checkout beside it, as inside the container) still renders jobs."""
    target = tmp_path / "site"
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(REPO),
    ]
    subprocess.run(pip, check=True, capture_output=True, cwd=tmp_path, timeout=300)
    assert (target / "hpml" / "_jobfiles" / "jobs" / "train.sbatch").is_file()
    assert (target / "hpml" / "_jobfiles" / "clusters" / "snellius.yaml").is_file()
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    code = "import hpml, sys; from hpml.cli import main; print('from', hpml.__file__); " "sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "submit",
            "train",
            "--cluster",
            "snellius",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            f"data.shards={shards}",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"from {target}" in proc.stdout and "#SBATCH --partition=gpu_a100" in proc.stdout
    assert "HPML_HOME=''" in proc.stdout  # no checkout: nothing is sourced from one


def test_imagenet_weights_resolve_on_the_login_node_and_the_job_names_the_file(tmp_path):
    """The job's config names the fetched file (bound into the container like any input); a missing
    one stops the submission with the command that fetches it."""
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    args = ["submit", "train", "--cluster", "snellius", "--config", REPO / "configs/covidnet-resnet50v2-512.yaml"]
    args += ["--run-dir", tmp_path / "run", *sets(f"data.shards={shards}"), "--dry-run"]
    cache = tmp_path / "weights"
    proc = hpml(*args, check=False, env={"HPML_WEIGHTS_DIR": str(cache)})
    assert proc.returncode == 2 and "hpml weights fetch resnet50v2" in proc.stderr, proc.stderr
    fetched = cache / "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cache.mkdir()
    fetched.write_bytes(b"stand-in")
    hpml(*args, env={"HPML_WEIGHTS_DIR": str(cache)})
    job_config = yaml.safe_load((tmp_path / "run" / "slurm" / "config.yaml").read_text())
    assert job_config["model"]["weights"] == str(fetched)


def test_a_sweep_file_naming_the_seed_config_resolves_its_imagenet_weights(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    cache = tmp_path / "weights"
    cache.mkdir()
    fetched = cache / "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    fetched.write_bytes(b"stand-in")
    spec = {"config": str(REPO / "configs/covidnet-resnet50v2-512.yaml"), "set": [f"data.shards={shards}"]}
    spec["grid"] = {"train.lr": [2e-5, 1e-4]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    args = [
        "submit",
        "sweep",
        "--cluster",
        "snellius",
        "--sweep",
        tmp_path / "sweep.yaml",
        "--run-dir",
        tmp_path / "sw",
    ]
    hpml(*args, "--dry-run", env={"HPML_WEIGHTS_DIR": str(cache)})
    for point in ("p000", "p001"):
        job_config = yaml.safe_load((tmp_path / "sw" / point / "slurm" / "config.yaml").read_text())
        assert job_config["model"]["weights"] == str(fetched)
