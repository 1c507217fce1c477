import re

from conftest import run_stage


def test_benchmark_measures_both_pipelines_and_prints_ratios(tiny_data, tmp_path):
    result = run_stage("bench.py", "--data-dir", tiny_data, "--device", "cpu", "--steps", "2", "--warmup", "1",
                       "--batch-size", "32", "--gradcam-images", "16", "--feature-images", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ours = re.search(r"ours  train +([\d.]+) img/s +eval +([\d.]+) img/s", result.stdout)
    peer = re.search(r"peer  train +([\d.]+) img/s +eval +([\d.]+) img/s", result.stdout)
    cams = re.search(r"Grad-CAM +([\d.]+) img/s in one batch of 16, ([\d.]+) img/s one image per call", result.stdout)
    assert ours and peer and cams, result.stdout
    for name in ["resnet50", "vit_b_16"]:
        assert re.search(rf"ours  {name} features +[\d.]+ img/s at 224x224", result.stdout)
    assert all(float(value) > 0 for match in (ours, peer, cams) for value in match.groups())
    ratio = re.search(r"ratio train +([\d.]+)x \(target 2x\)", result.stdout)
    expected = float(ours.group(1)) / float(peer.group(1))  # from the printed (rounded) rates
    assert ratio and abs(float(ratio.group(1)) - expected) <= 0.01 * expected + 0.01
    assert re.search(r"ratio eval +[\d.]+x \(target 3x\)", result.stdout)


def test_benchmark_without_the_peer_file_says_where_it_is_expected(tiny_data, tmp_path):
    result = run_stage("bench.py", "--data-dir", tiny_data, "--device", "cpu", "--steps", "1", "--warmup", "1",
                       "--batch-size", "16", "--gradcam-images", "8", "--feature-images", "0", "--peer",
                       tmp_path / "missing.py", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "missing.py not found" in result.stderr
