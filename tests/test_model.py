import pytest
import torch

from models import ARCHITECTURES, build_model
from stresstest.core.atomic import save_torch
from stresstest.core.checkpoint import classifier_checkpoint, load_classifier
from stresstest.core.errors import UserError
from stresstest.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from stresstest.nn.inference import inference_model


def test_resnet18_has_the_cifar_parameter_count():
    assert sum(p.numel() for p in build_model("resnet18", 10).parameters()) == 11_173_962


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("num_classes", [10, 100])
def test_forward_shapes_and_gradients_reach_every_parameter(arch, num_classes):
    torch.manual_seed(0)
    model = build_model(arch, num_classes).to(memory_format=torch.channels_last)
    images = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    logits = model(images)
    assert logits.shape == (4, num_classes) and torch.isfinite(logits).all()
    assert model.features(images).shape == (4, 512)
    logits.logsumexp(1).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_layer_resolutions_for_a_32x32_input():
    model = build_model("resnet18", 10).eval()
    sizes = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape))
             for name in ["layer1", "layer2", "layer3", "layer4"]]
    model(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert [tuple(sizes[f"layer{i}"][-2:]) for i in range(1, 5)] == [(32, 32), (16, 16), (8, 8), (4, 4)]


def test_folded_inference_model_matches_eval_model():
    torch.manual_seed(0)
    model = build_model("resnet18", 10)
    model(torch.randn(16, 3, 32, 32))  # move BatchNorm running statistics away from their init
    model.eval()
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(inference_model(model)(images), model(images), atol=1e-4, rtol=1e-4)
    assert not model.training


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    names = [f"class{i}" for i in range(10)]
    path = tmp_path / "best_model.pth"
    save_torch(path, classifier_checkpoint(model, "resnet18", names, CIFAR10_MEAN, CIFAR10_STD,
                                                {"label_smoothing": 0.1}, epoch=3))
    raw = torch.load(path, weights_only=True)
    assert raw["class_names"] == names and raw["normalization"]["std"] == list(CIFAR10_STD)
    assert raw["config"] == {"label_smoothing": 0.1} and raw["epoch"] == 3
    loaded, _ = load_classifier(path, "train.py", torch.device("cpu"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))


def test_foreign_and_corrupt_checkpoints_are_refused(tmp_path):
    model = build_model("resnet18", 10)
    cases = {
        "plain_state_dict.pth": lambda p: torch.save(model.state_dict(), p),
        "not_a_checkpoint.pth": lambda p: p.write_text("hello"),
        "pickled_object.pth": lambda p: torch.save({"format": object()}, p),
        "wrong_classes.pth": lambda p: save_torch(p, {
            **classifier_checkpoint(model, "resnet18", [str(i) for i in range(10)], CIFAR10_MEAN, CIFAR10_STD, {}),
            "num_classes": 100}),
        "wrong_arch.pth": lambda p: save_torch(p, {
            **classifier_checkpoint(model, "resnet18", [str(i) for i in range(10)], CIFAR10_MEAN, CIFAR10_STD, {}),
            "arch": "vgg11"}),
    }
    for name, write in cases.items():
        write(tmp_path / name)
        with pytest.raises(UserError, match="train.py"):
            load_classifier(tmp_path / name, "train.py", torch.device("cpu"))
    with pytest.raises(UserError, match="not found: run train.py first"):
        load_classifier(tmp_path / "absent.pth", "train.py", torch.device("cpu"))
