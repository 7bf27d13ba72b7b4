"""A pickle module for `torch.load(path, pickle_module=checkpoint_pickle, weights_only=False)` that rebuilds
tensors and nothing else.

Why: the official UTMOS22 checkpoint is a PyTorch-Lightning `.ckpt` that pickles its hyper-parameters (omegaconf
objects). torch's `weights_only` unpickler refuses those, and unpickling them for real would import and call
whatever the file names. Here the only way a pickle reaches code, `find_class`, returns the few functions that
rebuild tensors, and for every other global an inert stub: nothing is imported, and calling, building or
filling a stub does nothing. The state dict comes out intact; the configuration comes out as stubs, unread.
(torch.load itself resolves storage types, by dtype name, before `find_class` is asked.)
"""
from __future__ import annotations

import pickle
from collections import OrderedDict

import torch

TENSOR_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
                  ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
                  ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
                  ("collections", "OrderedDict"): OrderedDict}


class Stub:
    """Stands for any other global and for what is built from it: takes every call pickle makes, keeps nothing."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs) -> Stub:
        return self

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, item) -> None:
        pass

    def extend(self, items) -> None:
        pass


class Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return TENSOR_GLOBALS.get((module, name), Stub)


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()
