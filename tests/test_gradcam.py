"""The batched on-device Grad-CAM against pytorch_grad_cam's GradCAM, the reference it replaces, on real
CIFAR-10 images: study A's ResNet-18 at both documented layers and study B's backbones at 224x224."""
import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from models import build_model
from stresstest.nn.backbones import BACKBONES, feature_normalizer, load_backbone
from stresstest.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD, Normalizer, load_cifar10
from stresstest.nn.gradcam import gradcam_on_device


def package_gradcam(model, inputs, classes, layer, reshape_transform=None):
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape_transform) as cam:
        return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(int(c)) for c in classes])


@pytest.fixture(scope="module")
def real_test_images(real_data):
    data = load_cifar10(real_data, quiet=True)
    return torch.from_numpy(data.test_images[:24]), data.test_labels[:24]


@pytest.fixture  # a fresh model per test: the package's GradCAM leaves gradients on the parameters
def cifar_resnet(real_test_images):
    """A seeded random-init CIFAR ResNet-18 in eval mode, the real images normalized for it, their labels."""
    torch.manual_seed(0)
    images, labels = real_test_images
    inputs = Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu"))(images)
    return build_model("resnet18", 10).eval(), inputs, labels


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
@pytest.mark.parametrize("target", ["true", "predicted"])
def test_on_device_gradcam_equals_the_package_on_a_cifar_resnet(layer, target, cifar_resnet):
    model, inputs, labels = cifar_resnet
    with torch.no_grad():
        predicted = model(inputs).argmax(1).numpy()
    classes = labels if target == "true" else predicted
    maps, probs = gradcam_on_device(model, inputs, classes, model.get_submodule(layer), batch_size=10)
    assert all(p.grad is None for p in model.parameters())  # only the activations' gradients were taken
    expected = package_gradcam(model, inputs, classes, model.get_submodule(layer))
    assert maps.shape == expected.shape == (24, 32, 32) and maps.max() > 0.99
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(1), predicted)


def test_on_device_gradcam_in_bf16_stays_close_to_fp32(cifar_resnet):
    # bf16 is the path bench.py times on hardware with bf16 units (never measured here); its maps must stay
    # those of fp32 within bf16's rounding, and differ from them at all (autocast really on)
    model, inputs, labels = cifar_resnet
    inputs = inputs[:8]
    layer = model.get_submodule("layer4")
    fp32, fp32_probs = gradcam_on_device(model, inputs, labels[:8], layer, batch_size=8)
    bf16, bf16_probs = gradcam_on_device(model, inputs, labels[:8], layer, batch_size=8, precision="bf16")
    difference = np.abs(fp32 - bf16)
    assert 0 < difference.max() < 0.1 and difference.mean() < 0.01
    np.testing.assert_array_equal(bf16_probs.argmax(1), fp32_probs.argmax(1))


@pytest.mark.parametrize("name", ["efficientnet_lite0", pytest.param("vit_b_16", marks=pytest.mark.slow)])
def test_on_device_gradcam_equals_the_package_on_a_backbone(name, real_test_images):
    spec = BACKBONES[name]
    model = torch.nn.Sequential(load_backbone(name, "none", seed=0), torch.nn.Linear(spec.feature_dim, 10)).eval()
    images, labels = real_test_images
    inputs = feature_normalizer(name, torch.device("cpu"))(images[:3])
    layer = spec.cam_layer(model[0])
    maps, _ = gradcam_on_device(model, inputs, labels[:3], layer, batch_size=3, reshape_transform=spec.cam_reshape)
    expected = package_gradcam(model, inputs, labels[:3], layer, spec.cam_reshape)
    assert maps.shape == (3, 224, 224)
    np.testing.assert_allclose(maps, expected, atol=1e-4)
