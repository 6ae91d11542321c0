"""The Horovod build works under real MPI: 2 ranks allreduce their rank ids."""

import re
import subprocess
import sys

from conftest import MPI_ENV

SCRIPT = """
import horovod.tensorflow as hvd, tensorflow as tf
hvd.init()
total = hvd.allreduce(tf.constant(float(hvd.rank())), op=hvd.Sum)
gathered = hvd.allgather(tf.constant([hvd.rank()]))
print(f"rank={hvd.rank()} size={hvd.size()} sum={float(total)} all={sorted(gathered.numpy().tolist())}")
"""


def test_two_rank_allreduce_of_rank_ids():
    import os

    proc = subprocess.run(
        ["mpirun", "-np", "2", sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **MPI_ENV},
    )
    assert proc.returncode == 0, proc.stderr
    # Ranks share one stdout through mpirun; unbuffered prints may interleave, so match, don't split lines.
    lines = sorted(re.findall(r"rank=\d size=\d sum=[\d.]+ all=\[[\d, ]+\]", proc.stdout))
    assert lines == ["rank=0 size=2 sum=1.0 all=[0, 1]", "rank=1 size=2 sum=1.0 all=[0, 1]"]
