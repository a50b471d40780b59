"""Shared test set-up: quiet TensorFlow, and a clean Keras session per test."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_keras_session():
    yield
    if "keras" in __import__("sys").modules:
        import keras
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
    gc.collect()
