"""diffuse's C kernels: built once per machine into the cache, rebuilt when what they
depend on changes, and PyTorch's operations standing in, with a warning where a build
fails, wherever they cannot be had; and the fused GroupNorm's results through them."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch

from diffuse.nn import native
from diffuse.nn.group_norm import group_norm_act

needs_compiler = pytest.mark.skipif(
    native.find_compiler() is None, reason="no C compiler on this machine"
)


@pytest.fixture
def fresh(monkeypatch):
    """group_norm_kernels() builds or loads anew, and again after the test."""
    monkeypatch.delenv(native.OPT_OUT, raising=False)
    native.group_norm_kernels.cache_clear()
    yield
    native.group_norm_kernels.cache_clear()


def built_libraries():
    return sorted((native.user_cache_dir("kernels")).glob("*.so"))


@needs_compiler
def test_the_kernels_are_built_once_into_the_cache_and_loaded_from_it(fresh):
    assert native.group_norm_kernels() is not None
    (library,) = built_libraries()
    stamp = library.stat().st_mtime_ns
    native.group_norm_kernels.cache_clear()
    assert native.group_norm_kernels() is not None
    assert built_libraries() == [library] and library.stat().st_mtime_ns == stamp
    assert not list(library.parent.glob("*.part"))  # no partial build left behind


@needs_compiler
def test_a_changed_source_builds_a_library_of_its_own(fresh, monkeypatch, tmp_path):
    assert native.group_norm_kernels() is not None
    changed = tmp_path / native.SOURCE.name
    changed.write_text(native.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(native, "SOURCE", changed)
    native.group_norm_kernels.cache_clear()
    assert native.group_norm_kernels() is not None
    assert len(built_libraries()) == 2


def test_the_opt_out_keeps_pytorch(fresh, monkeypatch):
    monkeypatch.setenv(native.OPT_OUT, "0")
    assert native.group_norm_kernels() is None
    assert not built_libraries()


def test_no_compiler_means_pytorch_without_a_warning(fresh, monkeypatch, tmp_path):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cc, gcc or clang
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.group_norm_kernels() is None


def test_a_compiler_with_arguments_in_cc_is_split_as_a_shell_would(monkeypatch):
    monkeypatch.setenv("CC", "gcc -m64 -DEXTRA='a b'")
    assert native.find_compiler() == ["gcc", "-m64", "-DEXTRA=a b"]


@pytest.mark.parametrize("compiler", ["false", "/no/such/compiler"])
def test_a_failing_build_warns_and_leaves_pytorch(fresh, monkeypatch, compiler):
    if compiler == "false" and shutil.which("false") is None:
        pytest.skip("no `false` command")
    monkeypatch.setenv("CC", compiler)
    with pytest.warns(RuntimeWarning, match="C kernels"):
        assert native.group_norm_kernels() is None
    assert not built_libraries()
    assert not list(native.user_cache_dir("kernels").glob("*"))  # nor a partial one
    # and the fused GroupNorm still runs, on PyTorch's operations
    x = torch.randn(2, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    y = group_norm_act(x, torch.ones(4), torch.zeros(4), 2, 1e-5)
    torch.testing.assert_close(y, torch.nn.functional.group_norm(x, 2, eps=1e-5))


@needs_compiler
def test_a_damaged_library_in_the_cache_warns_and_leaves_pytorch(fresh, monkeypatch):
    monkeypatch.setattr(native, "build_key", lambda compiler: "damaged")
    target = native.user_cache_dir("kernels") / "group_norm_kernels-damaged.so"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a shared library")
    with pytest.warns(RuntimeWarning, match="not available"):
        assert native.group_norm_kernels() is None


def with_kernels(monkeypatch, on: bool):
    monkeypatch.setenv(native.OPT_OUT, "1" if on else "0")
    native.group_norm_kernels.cache_clear()
    assert (native.group_norm_kernels() is not None) == on


def run(x, weight, bias, scale, shift, silu, grad_out, groups=4):
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias, scale, shift)]
    y = group_norm_act(*leaves[:3], groups, 1e-5, *leaves[3:], silu)
    return [y, *torch.autograd.grad(y, leaves, grad_out)]


@needs_compiler
@pytest.mark.parametrize(
    ("images", "threads", "silu"),
    [(1, 2, True), (3, 2, True), (5, 4, True), (3, 1, False), (4, 2, False)],
)
def test_the_kernels_agree_with_pytorch_whatever_the_threads_batch_and_gradient_layout(
    fresh, monkeypatch, images, threads, silu
):
    generator = torch.Generator().manual_seed(images * 10 + threads)
    x = (2 + 3 * torch.randn(images, 8, 6, 5, generator=generator)).to(
        memory_format=torch.channels_last
    )
    weight, bias = torch.randn(2, 8, generator=generator)
    scale, shift = torch.randn(2, images, 8, 1, 1, generator=generator)
    grad_out = torch.randn(x.shape, generator=generator)  # NCHW: the kernels take any layout
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with_kernels(monkeypatch, True)
        ours = run(x, weight, bias, scale, shift, silu, grad_out)
    finally:
        torch.set_num_threads(previous)
    with_kernels(monkeypatch, False)
    reference = run(x, weight, bias, scale, shift, silu, grad_out)
    for name, got, expected in zip("yxwbst", ours, reference, strict=True):
        atol = 2e-5 * expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=0, atol=atol, msg=name)
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    assert ours[1].is_contiguous(memory_format=torch.channels_last)


@needs_compiler
@pytest.mark.parametrize("mean", [100.0, 1e4])
def test_the_kernels_keep_the_variance_accurate_far_from_zero(fresh, monkeypatch, mean):
    # the sums are measured from each image's first pixel, so the variance keeps its digits
    # at a mean of 10^4 spreads (E[x^2] - E[x]^2 in float32 would have none left); what
    # remains is float32's rounding of a x + b, a few units in the last place of the mean
    # over the spread (1): two roundings where the compiler fuses no multiply-add
    atol = 4 * torch.finfo(torch.float32).eps * mean
    generator = torch.Generator().manual_seed(0)
    x = (mean + torch.randn(2, 8, 7, 7, generator=generator, dtype=torch.float64)).float()
    x = x.contiguous(memory_format=torch.channels_last)
    with_kernels(monkeypatch, True)
    y = group_norm_act(x, torch.ones(8), torch.zeros(8), 4, 1e-5)
    exact = torch.nn.functional.group_norm(x.double(), 4, eps=1e-5)
    torch.testing.assert_close(y.double(), exact, rtol=0, atol=atol)


@needs_compiler
def test_a_nan_reaches_the_output_and_the_gradients_through_the_kernels(fresh, monkeypatch):
    x = torch.randn(2, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    x[1, 0, 2, 2] = float("nan")
    with_kernels(monkeypatch, True)
    y, dx, *_ = run(x, torch.ones(4), torch.zeros(4), torch.zeros(2, 4, 1, 1),
                    torch.zeros(2, 4, 1, 1), True, torch.ones(x.shape), groups=2)  # fmt: skip
    assert y[1, :2].isnan().all() and dx[1, :2].isnan().all()  # the NaN's group
    assert y[0].isfinite().all() and dx[0].isfinite().all()  # another image: untouched


@needs_compiler
def test_the_kernels_run_on_pytorchs_own_openmp_threads(fresh):
    # threads of their own would contend with PyTorch's, which spin after each operation
    maps = Path("/proc/self/maps")
    if not maps.exists() or "OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("needs Linux and a PyTorch built with OpenMP")
    assert native.group_norm_kernels() is not None
    # the library asks for libgomp.so.1 and gets the one PyTorch loaded, not a second copy
    # (other packages' runtimes under names of their own, scikit-learn's, may be there too)
    mapped = {line.split()[-1] for line in maps.read_text().splitlines()}
    runtimes = {path for path in mapped if Path(path).name == "libgomp.so.1"}
    assert len(runtimes) == 1, runtimes


@needs_compiler
def test_an_nchw_input_is_left_to_pytorch_and_gives_the_same_values(fresh, monkeypatch):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 5, 5, generator=generator)
    weight, bias = torch.randn(2, 8, generator=generator)
    with_kernels(monkeypatch, True)
    nchw = group_norm_act(x, weight, bias, 4, 1e-5, silu=True)
    channels_last = group_norm_act(x.to(memory_format=torch.channels_last), weight, bias, 4,
                                   1e-5, silu=True)  # fmt: skip
    torch.testing.assert_close(nchw, channels_last, rtol=0, atol=1e-6)
