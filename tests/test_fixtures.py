"""The test suite's own safeguards: the shipped images are the real ones, a test that
reaches for the network fails, and no test sees a GPU or TensorBoard but those that ask."""

import importlib
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffuse.data import load_dataset
from diffuse.devices import available_devices, default_device
from diffuse.errors import MissingFileError


@pytest.mark.needs_data("fashion-mnist")
def test_shipped_fashion_images_are_the_first_of_the_real_test_split(fashion_sample):
    images, labels = fashion_sample
    real = load_dataset("fashion-mnist", split="test", download=False)
    np.testing.assert_array_equal(images, real.uint8(range(16)))
    np.testing.assert_array_equal(labels, real.labels[:16].numpy())


def test_shipped_fashion_images_are_sixteen_labelled_grey_images(fashion_sample):
    images, labels = fashion_sample
    assert images.shape == (16, 28, 28, 1) and images.dtype == np.uint8
    assert labels.tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1]
    assert images.max() == 255 and (images[:, 0, 0] == 0).all()  # white on black


def test_a_connection_beyond_this_machine_is_refused_and_recorded(network_guard):
    with pytest.raises(ConnectionRefusedError, match="offline"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1, never routed
    with pytest.raises(ConnectionRefusedError, match="offline"):
        socket.getaddrinfo("example.org", 443)
    assert len(network_guard.attempts) == 2
    network_guard.attempts.clear()  # recorded attempts would fail this test at teardown


def test_loopback_stays_open(network_guard):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
    assert network_guard.attempts == []


def test_a_named_data_set_is_never_downloaded_or_read_from_the_system(tmp_path):
    # The default run hides /usr/share/datasets and $DIFFUSE_DATA and sets $DIFFUSE_OFFLINE:
    # a missing data set is reported, not fetched.
    with pytest.raises(MissingFileError, match=r"DIFFUSE_OFFLINE is set"):
        load_dataset("fashion-mnist", split="test")


def test_no_test_sees_a_gpu_nor_do_the_processes_it_starts():
    assert default_device() == torch.device("cpu") and available_devices() == ["cpu"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    probe = "import torch; print(torch.cuda.device_count())"
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert child.stdout.strip() == "0", child.stderr


def test_tensorboard_reads_as_not_installed():
    with pytest.raises(ImportError):
        importlib.import_module("torch.utils.tensorboard")
