"""The Python entry point for a model already in memory: import it, then run every analysis stage and the report
on it, exactly as `import_model.py` and `run_pipeline.py --baseline ... [--improved ...]` do.

    from stresstest import Preprocessing, import_model, stress_test
    checkpoint = import_model(net, arch="mynet.py:Net", name="mynet", preprocessing=Preprocessing(), data_dir="data")
    stress_test(checkpoint, data_dir="data")  # -> experiments/report/index.html
"""
from pathlib import Path

from .core import paths
from .importing import RAW_PIXELS, Preprocessing, import_model  # noqa: F401 (re-exported by stresstest)
from .pipeline import PipelineParams, run_stages



def stress_test(baseline: Path, improved: Path | None = None, data_dir: Path = Path("data"), device: str = "auto",
                seed: int = 0, smoke: bool = False, from_stage: str = "failure_analysis.py") -> Path:
    """The analysis stages on `baseline` (and the comparison with `improved` when given), each in its own process
    as the pipeline runs them, writing under experiments/ and failure_cases/ of the working folder. Raises
    stresstest.UserError naming the stage that failed. Returns the report's path."""
    run_stages(PipelineParams(data_dir=Path(data_dir), device=device, seed=seed, smoke=smoke, from_stage=from_stage,
                              baseline=Path(baseline), improved=Path(improved) if improved else None))
    return paths.REPORT_DIR / "index.html"
