"""The seeds stage: t-intervals and stability against direct computations, and the stage on generated data
(tiny runs), including that a finished seed is not retrained and that a foreign run is refused."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from conftest import MACHINERY_ARCH, assert_user_error, file_digests, run_stage_in_process, write_checkpoint
from stresstest.metrics import t_interval
from stresstest.stages import seeds
from stresstest.training import TrainConfig

TINY_RECIPE = TrainConfig(arch=MACHINERY_ARCH, epochs=1, max_train_images=128, batch_size=32, lr=0.05,
                          val_fraction=0.1)


def test_t_interval_is_scipys():
    values = [0.71, 0.74, 0.73, 0.70, 0.75]
    mean, std, low, high = t_interval(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(0.726) and std == pytest.approx(np.std(values, ddof=1))
    assert (low, high) == pytest.approx(expected)
    assert np.isnan(t_interval([0.7])[2])


def test_paired_difference_is_taken_seed_by_seed():
    per_seed = pd.DataFrame([{"model": m, "seed": s, **{k: v for k in seeds.METRICS}}
                             for m, s, v in [("baseline", 0, 5), ("baseline", 1, 9), ("improved", 1, 4),
                                             ("improved", 0, 3)]])
    summary = seeds.summarise(per_seed).set_index(["model", "metric"])
    assert summary.loc[("baseline_minus_improved", "accuracy"), "mean"] == pytest.approx(((5 - 3) + (9 - 4)) / 2)
    assert summary.loc[("baseline", "nll"), "mean"] == 7


def test_stability_counts_and_overlap():
    table, overlap = seeds.stability({"baseline": {0: {1, 2, 3}, 1: {2, 3, 4}}, "improved": {0: set(), 1: {2}}})
    assert list(table.test_index) == [1, 2, 3, 4] and list(table.baseline_seeds) == [1, 2, 2, 1]
    assert overlap == {"baseline": pytest.approx(2 / 4), "improved": 0.0}


@pytest.mark.slow
def test_seeds_stage_trains_once_and_reports(tiny_data, tmp_path):
    # each model's recipe comes from its training stage's checkpoint (here untrained ones with tiny recipes)
    for tag, smoothing in [("baseline", 0.0), ("improved", 0.1)]:
        write_checkpoint(tmp_path / "experiments" / tag / "best_model.pth", seed=0,
                         config=dataclasses.asdict(dataclasses.replace(TINY_RECIPE, label_smoothing=smoothing)))
    result = run_stage_in_process("failure_analysis.py", "--data-dir", tiny_data, "--threshold", "0.1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    args = ["--data-dir", tiny_data, "--device", "cpu", "--smoke", "--seeds", "0", "1"]
    result = run_stage_in_process("seeds.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "experiments" / "seeds"
    per_seed = pd.read_csv(out / "per_seed.csv")
    assert len(per_seed) == 4 and (per_seed.images == 120).all()
    assert {tuple(r) for r in per_seed[["model", "seed"]].to_numpy()} == {(m, s) for m in ["baseline", "improved"]
                                                                          for s in [0, 1]}
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.model) == {"baseline", "improved", "baseline_minus_improved"}
    assert (summary.threshold == 0.1).all()
    tests = pd.read_csv(out / "mcnemar.csv")
    assert len(tests) == 2 and tests.mcnemar_exact_p.between(0, 1).all()
    for folder, smoothing in [("baseline/seed_0", 0.0), ("improved/seed_1", 0.1)]:
        config = torch.load(out / folder / "best_model.pth", weights_only=True)["config"]
        assert config == dataclasses.asdict(dataclasses.replace(TINY_RECIPE, label_smoothing=smoothing,
                                                                seed=int(folder[-1])))
    assert (out / "seeds.png").is_file() and (out / "failure_stability.csv").is_file()
    trained = file_digests(out)
    again = run_stage_in_process("seeds.py", *args, cwd=tmp_path)
    assert again.returncode == 0  # nothing retrained: every run's files as they were
    assert {k: v for k, v in file_digests(out).items() if "seed_" in k} == \
        {k: v for k, v in trained.items() if "seed_" in k}
    pd.testing.assert_frame_equal(per_seed, pd.read_csv(out / "per_seed.csv"))
    longer = tmp_path / "longer" / "best_model.pth"  # a baseline of another recipe meets seed 0's finished run
    write_checkpoint(longer, config=dataclasses.asdict(dataclasses.replace(TINY_RECIPE, epochs=2)))
    result = run_stage_in_process("seeds.py", "--data-dir", tiny_data, "--device", "cpu", "--seeds", "0",
                                  "--baseline", longer, cwd=tmp_path)
    assert_user_error(result, "holds a run with other settings", "epochs")
    write_checkpoint(longer)  # no training config: not a run of the training stages
    result = run_stage_in_process("seeds.py", "--data-dir", tiny_data, "--baseline", longer, cwd=tmp_path)
    assert_user_error(result, "has no training config", "train.py")
    # a new seed through submitit's local processes (the fallback where there is no SLURM)
    result = run_stage_in_process("seeds.py", *args[:-2], "2", "--launcher", "local", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (out / "baseline" / "seed_2" / "best_model.pth").is_file() and list((out / "submitit").glob("*_result.pkl"))
    assert len(pd.read_csv(out / "per_seed.csv")) == 2
