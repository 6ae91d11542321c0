"""The scaling model: known FLOPs, the communication formula, and flatten vs gap."""

import json

from conftest import REPO, hpml

from hpml.bench_scaling import Assumptions, model_step


def test_communication_model():
    a = Assumptions(device_tflops=10, intra_gbps=100, inter_gbit=80, gpus_per_node=4, batch_per_gpu=1)
    compute, comm = model_step(1, 10**12, 4e9, a)
    assert compute == 0.3 and comm == 0.0  # 3 x 1 TFLOP / 10 TFLOPS; one GPU talks to nobody
    _, comm4 = model_step(4, 10**12, 4e9, a)
    assert abs(comm4 - 2 * 3 / 4 * 4e9 / 100e9) < 1e-12  # ring inside one node
    _, comm8 = model_step(8, 10**12, 4e9, a)
    assert abs(comm8 - (comm4 + 2 * 1 / 2 * 4e9 / 10e9)) < 1e-12  # plus a ring across 2 nodes at 10 GB/s


def test_flop_counter_matches_published_numbers():
    import tensorflow as tf

    from hpml.bench_scaling import forward_flops

    resnet50 = forward_flops(tf.keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3)))
    mobilenet = forward_flops(tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)))
    assert abs(resnet50 / 2e9 - 3.86) < 0.05  # the ResNet paper's "3.8 x 10^9" multiply-adds
    assert abs(mobilenet / 2e6 - 300) < 5  # MobileNetV2 paper: 300 M multiply-adds


def test_seed_config_flatten_scales_worse_than_gap(tmp_path):
    out = tmp_path / "scaling.json"
    proc = hpml("bench", "scaling", "--config", REPO / "configs/covidnet-resnet50v2-512.yaml", "--no-measure",
                "--json", out)  # fmt: skip
    r = json.loads(out.read_text())
    flatten, gap = r["flatten"], r["gap"]
    assert flatten["parameters"]["head"] == 537_135_107
    # ResNet50V2 is 3.48 GMAC at 224 px (stride in the last block of each stage); x (512/224)^2 at 512 px.
    assert 36.0 < gap["forward_gflops"] < 36.8 and flatten["forward_gflops"] - gap["forward_gflops"] > 1.0
    assert flatten["grad_mb_fp32"] > 20 * gap["grad_mb_fp32"]
    assert flatten["table"][-1]["eff_fp32"] < 0.5 < gap["table"][-1]["eff_fp32"]
    assert "flatten head:" in proc.stdout and "efficiency" in proc.stdout


def test_measurements_run_on_a_small_model():
    proc = hpml("bench", "scaling", "--config", REPO / "configs/demo.yaml", "--gpus", "1,8")
    assert proc.stdout.count("measured here: Horovod allreduce") == 2
    assert proc.stdout.count("measured here: one training step") == 2
