import contextlib
import functools
import hashlib
import http.server
import importlib.util
import io
import os
import pickle
import runpy
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path

import numpy as np
import pytest
import torch

from models import build_model
from stresstest.core.atomic import save_torch
from stresstest.core.checkpoint import classifier_checkpoint
from stresstest.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, Cifar10, load_cifar10

REPO = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test's workers share the cores: a thread count each (inherited by every stage they start) that adds up
    # to the cores; unpinned, two workers' torch threads contended so that the smoke pipeline took 19 minutes
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) //
                                                     int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset"
DATA_VARIABLE = "STRESSTEST_CIFAR10_DIR"
# Tests of the training machinery (seeds, folds, torchrun, open-set runs) train torchvision's ResNet-18: its stride-2
# stem and max-pool make it about twice as fast at 32x32 on a CPU (10 s against 17 s per tiny run, one thread), and
# the machinery does not depend on the network. The CIFAR ResNet-18 itself trains in the smoke pipeline and in
# test_training.py.
MACHINERY_ARCH = "torchvision:resnet18"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class-dependent 32x32 images a small CNN can learn: a class colour, class-oriented stripes,
    a random shift and pixel noise. Returned as the official N x 3072 channel-major uint8 rows."""
    n = len(labels)
    y, x = np.mgrid[0:32, 0:32].astype(np.float32)
    colours = rng.uniform(40, 215, size=(10, 3)).astype(np.float32)
    angles = np.linspace(0, np.pi, 10, endpoint=False)
    shift = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    phase = np.cos(angles[labels])[:, None, None] * x + np.sin(angles[labels])[:, None, None] * y
    stripes = 40 * np.sin(phase * (0.4 + 0.05 * labels[:, None, None]) + shift)
    images = colours[labels][:, :, None, None] + stripes[:, None] + rng.normal(0, 12, size=(n, 3, 32, 32))
    return np.clip(images, 0, 255).astype(np.uint8).reshape(n, 3072)


def write_cifar(root: Path, per_batch: int, test_count: int, seed: int = 0) -> Path:
    """A CIFAR-10 copy in the official python layout under root/cifar-10-batches-py; returns root."""
    rng = np.random.default_rng(seed)
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)

    def dump(name, obj):
        with open(batches / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for i in range(1, 6):
        labels = rng.integers(0, 10, per_batch)
        dump(f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": labels.tolist(),
                                 "data": make_images(labels, rng)})
    labels = rng.integers(0, 10, test_count)
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels.tolist(),
                        "data": make_images(labels, rng)})
    dump("batches.meta", {"label_names": CLASS_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """400 training and 120 test images in the official layout."""
    return write_cifar(tmp_path_factory.mktemp("tiny"), per_batch=80, test_count=120)


def pytest_addoption(parser):
    parser.addoption("--cifar10-dir", type=Path, help="folder holding cifar-10-batches-py/ with real CIFAR-10 images "
                                                      "for the real_data tests (the full set or a subset)")


def real_data_candidates(config) -> list[Path]:
    """Where real CIFAR-10 may be, in order: --cifar10-dir, $STRESSTEST_CIFAR10_DIR, the repository's data/ (the
    stages download it there), and ../shared/data/cifar10-subset beside the repository (CI and developers)."""
    given = [config.getoption("--cifar10-dir"), os.environ.get(DATA_VARIABLE)]
    return [Path(p) for p in given if p] + [REPO / "data", SUBSET]


def pytest_collection_modifyitems(config, items):
    for item in items:  # the real_data marker follows the fixture, so -m real_data runs exactly these tests
        if "real_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_data)
    # the longest modules first, so that `make test`'s workers (a module each, in this order) start them at once
    # and share the rest: the smoke pipeline's, then by their number of slow tests
    cost: dict = {}
    for item in items:
        uses_pipeline = "smoke_pipeline" in getattr(item, "fixturenames", ())
        pipeline, slow = cost.get(item.path, (False, 0))
        cost[item.path] = (pipeline or uses_pipeline, slow + (item.get_closest_marker("slow") is not None))
    items.sort(key=lambda item: (not cost[item.path][0], -cost[item.path][1]))


@pytest.fixture(scope="session")
def real_data(pytestconfig) -> Path:
    """A folder of real CIFAR-10 images in the official layout (the full set or a subset), or a skip with one line
    that says where the tests looked."""
    candidates = real_data_candidates(pytestconfig)
    for folder in candidates:
        if (folder / "cifar-10-batches-py" / "data_batch_1").is_file():
            return folder
    pytest.skip(f"no real CIFAR-10 images (looked in {', '.join(map(str, candidates))}; pass --cifar10-dir=DIR or set "
                f"{DATA_VARIABLE})")


@pytest.fixture(scope="session")
def tiny_archive_url(tiny_data, tmp_path_factory):
    """URL of cifar-10-python.tar.gz of the tiny data, served on loopback, and the archive's md5."""
    folder = tmp_path_factory.mktemp("archive")
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_data / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with served(folder) as url:
        yield f"{url}/{archive.name}", hashlib.md5(archive.read_bytes()).hexdigest()


@contextlib.contextmanager
def served(folder: Path):
    """The files of `folder` over HTTP on loopback (downloads tested without the network); yields the base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@dataclass(frozen=True)
class SmokePipeline:
    """What `run_pipeline.py --smoke` left in its working folder, run once per session on the real images."""
    workdir: Path
    data: Cifar10
    stdout: str

    def checkpoint(self, tag: str) -> Path:
        return self.workdir / "experiments" / tag / "best_model.pth"

    def test_probabilities(self, tag: str) -> np.ndarray:
        """(N, 10) float64 softmax of the run's `tag` model on the test images, in fp32 as the stages report;
        computed once per model (four tests read them)."""
        if tag not in SMOKE_PROBABILITIES:
            from stresstest.core.checkpoint import load_classifier
            from stresstest.nn.inference import probabilities

            model, checkpoint = load_classifier(self.checkpoint(tag), "train.py", torch.device("cpu"))
            SMOKE_PROBABILITIES[tag] = probabilities(model, checkpoint,
                                                     torch.from_numpy(self.data.test_images)).double().numpy()
        return SMOKE_PROBABILITIES[tag].copy()


SMOKE_PROBABILITIES: dict[str, np.ndarray] = {}  # one smoke pipeline per session


@pytest.fixture(scope="session")
def smoke_pipeline(real_data, tmp_path_factory) -> SmokePipeline:
    """The fourteen-stage smoke pipeline on the real subset as a user runs it (about 6 minutes on 2 CPU cores). Its
    tests live in test_pipeline.py, so that `make test` (pytest-xdist, one file per worker) runs it once; tests
    read it and write elsewhere."""
    workdir = tmp_path_factory.mktemp("pipeline")
    result = run_stage("run_pipeline.py", "--smoke", "--data-dir", real_data, "--device", "cpu", cwd=workdir,
                       timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return SmokePipeline(workdir, load_cifar10(real_data, quiet=True), result.stdout)


def run_stage(script: str, *args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a stage script the way a user does, from `cwd` (so default output paths land there)."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def run_stage_in_process(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    """run_stage without a new interpreter: the script runs as __main__ in this process (its imports are
    already loaded), from `cwd`. The fast form for tests of argument checks and error messages."""
    out, err = io.StringIO(), io.StringIO()
    code, saved_argv = 0, sys.argv
    sys.argv = [str(REPO / script), *map(str, args)]
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A fixable mistake: non-zero exit, one line on stderr naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def file_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_checkpoint(path, seed=0, num_classes=10, config=None, **changes):
    """An untrained ResNet-18 saved as a stage would save it; `changes` override checkpoint entries."""
    torch.manual_seed(seed)
    model = build_model("resnet18", num_classes)
    names = CLASS_NAMES if num_classes == 10 else [f"c{i}" for i in range(num_classes)]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch(path, {**classifier_checkpoint(model, "resnet18", names, CIFAR10_MEAN, CIFAR10_STD, config or {}),
                      **changes})


def synthetic_predictions(n=4000, classes=10, sharpen=3.0, seed=0):
    """(logits, labels, sharpened logits): labels drawn from softmax(logits), so the logits are calibrated by
    construction and `sharpen` times them over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, size=(n, classes))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = (probs.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels, sharpen * logits


def reference_calibration():
    """The authors' code of "Verified uncertainty calibration" (the uncertainty-calibration package). Its module is
    named `calibration`, which this repository's calibration.py shadows when tests run from the root, so it is
    loaded from its installed file."""
    path = distribution("uncertainty-calibration").locate_file("calibration/utils.py")
    spec = importlib.util.spec_from_file_location("reference_calibration", str(path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probs.max(1), probs.argmax(1) == labels
