import json

import pandas as pd
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import run_stage_in_process, write_cifar
from stresstest.stages import bench as benchmark
from stresstest.data.corruptions import NAMES
from stresstest.nn.cam_layers import BUILT_IN_LAYERS


def test_our_measurement_times_exactly_the_steps_asked_for(tmp_path):
    data = write_cifar(tmp_path, per_batch=8, test_count=8)  # 36 training images: one step of 32 per epoch
    ours = benchmark.measure_ours(data, torch.device("cpu"), steps=3, warmup=1, batch_size=32, compile_model=False)
    trainer = ours["trainer"]
    assert trainer.steps_per_epoch == 1 and trainer.scheduler.last_epoch == 4  # the schedule did not run out
    assert ours["train"] > 0 and ours["eval"] > 0
    check = benchmark.measure_import_check(trainer)  # the import's check of the same model, on all 8 test images
    assert check["images"] == 8 and check["seconds"] > 0


def test_the_gradcam_ceiling_counts_the_forward_pass_and_the_backward_to_the_layer_only(tmp_path):
    data = write_cifar(tmp_path, per_batch=8, test_count=8)
    trainer = benchmark.measure_ours(data, torch.device("cpu"), steps=1, warmup=1, batch_size=32,
                                     compile_model=False)["trainer"]
    cams = benchmark.measure_gradcam(trainer, count=4, single_count=1)  # fewer than the 8 counted by default
    model = trainer.model.eval()
    with FlopCounterMode(display=False) as forward:
        model(torch.zeros(1, 3, 32, 32))
    with FlopCounterMode(display=False) as last_stage:  # the backward to layer3 costs about layer4's forward
        model.layer4(torch.zeros(1, 256, 8, 8))
    assert BUILT_IN_LAYERS["resnet18"] == "layer3"
    expected = forward.get_total_flops() + last_stage.get_total_flops()
    assert cams["flops_per_map"] == pytest.approx(expected, rel=0.01)  # no weight gradients
    assert cams["matmul_flops_per_s"] > 0 and all(rate > 0 for rate in cams["rates"].values())


@pytest.mark.slow
def test_the_peer_is_run_and_read(tiny_data):
    if not benchmark.DEFAULT_PEER.is_file():
        pytest.skip(f"peer benchmark not found at {benchmark.DEFAULT_PEER} (only in CI and on developer machines)")
    peer = benchmark.measure_peer(benchmark.DEFAULT_PEER, tiny_data, torch.device("cpu"), steps=1, warmup=1,
                                  batch_size=16)
    assert peer["train"] > 0 and peer["eval"] > 0


def test_benchmark_without_the_peer_file_says_where_it_is_expected(tiny_data, tmp_path):
    result = run_stage_in_process("bench.py", "--data-dir", tiny_data, "--device", "cpu", "--steps", "1", "--warmup",
                                  "1", "--batch-size", "16", "--gradcam-images", "8", "--feature-images", "0",
                                  "--corruption-images", "0", "--occlusion-images", "0",
                                  "--peer", tmp_path / "missing.py", cwd=tmp_path)
    assert result.returncode == 2 and "missing.py not found" in result.stderr


def test_corruption_and_occlusion_measurements_time_every_type():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    rates = benchmark.measure_corruptions(images, reference_count=2, severity=1)
    assert list(rates) == NAMES and all(r["ours"] > 0 and r["reference"] > 0 for r in rates.values())
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 10))  # the measurement, not the model, is under test
    occlusion = benchmark.measure_occlusion(small, images[:2], single_count=1)
    assert occlusion["count"] == 2 and occlusion["batched"] > 0 and occlusion["single"] > 0


@pytest.mark.slow
def test_data_parallel_measurement_runs_both_launches(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rates = benchmark.measure_data_parallel(tiny_data, processes=2, images=64, batch_size=16)
    assert set(rates) == {"one process", "2 processes"} and all(rate > 0 for rate in rates.values())
    assert not (tmp_path / "experiments").exists()  # the user's records are not touched


def test_attack_measurement_times_both_forms_and_autoattack(tiny_data):
    trainer = benchmark.measure_ours(tiny_data, torch.device("cpu"), steps=1, warmup=1, batch_size=32,
                                     compile_model=False)["trainer"]
    rates = benchmark.measure_attacks(trainer.model, trainer.test_images[:4], single_count=1, autoattack_count=2)
    assert set(rates) == {"pgd_batched", "pgd_single", "autoattack"} and all(r > 0 for r in rates.values())


def test_the_figures_go_to_a_csv_and_a_record(tiny_data, tmp_path):
    result = run_stage_in_process("bench.py", "--data-dir", tiny_data, "--device", "cpu", "--steps", "1", "--warmup",
                                  "1", "--batch-size", "16", "--gradcam-images", "8", "--feature-images", "0",
                                  "--corruption-images", "0", "--occlusion-images", "0", "--attack-images", "0",
                                  "--knn-bank", "600", "--knn-queries", "100", "--skip-peer", "--out-dir", "numbers",
                                  cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "numbers" / "bench.csv")
    assert {"ours train", "ours eval, fp32", "Grad-CAM package_single", "import_model.py check of a ResNet-18",
            "ours OOD KNN (k 50)"} <= set(table.measure)
    assert (table.value > 0).all() and set(table.unit) <= {"img/s", "s", "x", "maps/s", "queries/s"}
    record = json.loads((tmp_path / "experiments" / "records" / "bench.json").read_text())
    rows = record["sections"][0]["tables"][0]["rows"]
    assert [row[0] for row in rows] == list(table.measure) and record["outputs"]["bench"] == "numbers"
