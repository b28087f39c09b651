"""Rebuilds a Keras 2 HDF5 classifier in torch from its own config and weights (h5py, no TF).

Covers the layers of the FER2013 Xception models: InputLayer, Conv2D, SeparableConv2D,
BatchNormalization, Activation, MaxPooling2D, AveragePooling2D, Add, Dropout,
GlobalAveragePooling2D, Flatten and Dense. Keras' "same" padding is asymmetric for even
sizes (the extra row/column goes bottom/right); it is reproduced with explicit pads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from motivnet_edge.errors import MotivnetError


class KerasFormatError(MotivnetError, ValueError):
    """The HDF5 file is not a Keras model this rebuild understands."""


def _same_pad(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], mode: str = "constant") -> torch.Tensor:
    pads = []
    for size, kk, ss in ((x.shape[-1], k[1], s[1]), (x.shape[-2], k[0], s[0])):
        total = max((math.ceil(size / ss) - 1) * ss + kk - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, mode=mode) if any(pads) else x


class KerasLayer(nn.Module):
    """One Keras layer; ``forward`` takes the list of its inputs."""

    def __init__(self, kind: str, cfg: dict, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.kind, self.cfg = kind, cfg
        t = lambda a: nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)).float(), requires_grad=False)  # noqa: E731
        if kind == "Conv2D":
            self.weight = t(weights["kernel"].transpose(3, 2, 0, 1))
            self.bias = t(weights["bias"]) if cfg.get("use_bias") else None
        elif kind == "SeparableConv2D":
            dw = weights["depthwise_kernel"]  # (kh, kw, in, mult)
            self.depthwise = t(dw.transpose(2, 3, 0, 1).reshape(-1, 1, dw.shape[0], dw.shape[1]))
            self.pointwise = t(weights["pointwise_kernel"].transpose(3, 2, 0, 1))
            self.bias = t(weights["bias"]) if cfg.get("use_bias") else None
        elif kind == "BatchNormalization":
            self.gamma = t(weights.get("gamma", np.ones_like(weights["moving_mean"])))
            self.beta = t(weights.get("beta", np.zeros_like(weights["moving_mean"])))
            # Running statistics are buffers, as in nn.BatchNorm2d: nothing trains them.
            self.register_buffer("mean", torch.from_numpy(np.ascontiguousarray(weights["moving_mean"])).float())
            self.register_buffer("var", torch.from_numpy(np.ascontiguousarray(weights["moving_variance"])).float())
        elif kind == "Dense":
            self.weight, self.bias = t(weights["kernel"].T), t(weights["bias"])

    def _conv(self, x, weight, stride, groups=1):
        k, s = tuple(self.cfg["kernel_size"]), tuple(self.cfg.get("strides", (1, 1)))
        if self.cfg.get("padding") == "same":
            x = _same_pad(x, k, s)
        return F.conv2d(x, weight, None, s, 0, tuple(self.cfg.get("dilation_rate", (1, 1))), groups)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        x, kind, c = xs[0], self.kind, self.cfg
        if kind in ("InputLayer", "Dropout", "SpatialDropout2D"):
            return x
        if kind == "Conv2D":
            y = self._conv(x, self.weight, c.get("strides", (1, 1)))
        elif kind == "SeparableConv2D":
            y = self._conv(x, self.depthwise, c.get("strides", (1, 1)), groups=x.shape[1])
            y = F.conv2d(y, self.pointwise)
        elif kind == "BatchNormalization":
            return F.batch_norm(x, self.mean, self.var, self.gamma, self.beta, False, 0.0, c.get("epsilon", 1e-3))
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            k, s = tuple(c["pool_size"]), tuple(c.get("strides") or c["pool_size"])
            if c.get("padding") != "same":
                return F.max_pool2d(x, k, s) if kind == "MaxPooling2D" else F.avg_pool2d(x, k, s)
            if kind == "MaxPooling2D":
                # Edge-replicated padding gives the max of -inf padding (a window that holds a padded
                # cell also holds the edge cell it copies) while every tensor stays finite: an -inf
                # activation made INT8 calibration ranges infinite (ORT: every face one class).
                return F.max_pool2d(_same_pad(x, k, s, mode="replicate"), k, s)
            # TensorFlow's "same" average leaves the padding out of the count.
            ones = torch.ones_like(x[:, :1])
            return F.avg_pool2d(_same_pad(x, k, s), k, s) / F.avg_pool2d(_same_pad(ones, k, s), k, s)
        elif kind == "Add":
            y = xs[0]
            for other in xs[1:]:  # plain Adds: a stack + sum exported as Unsqueeze/Concat/ReduceSum
                y = y + other
            return y
        elif kind == "GlobalAveragePooling2D":
            return x.mean(dim=(2, 3))
        elif kind == "Flatten":
            return x.permute(0, 2, 3, 1).flatten(1)  # Keras flattens channels-last
        elif kind == "Dense":
            y = F.linear(x, self.weight, self.bias)
        elif kind == "Activation":
            y = x
        else:
            raise KerasFormatError(f"layer type {kind} is not supported")
        if kind not in ("Activation",) and getattr(self, "bias", None) is not None and kind != "Dense":
            y = y + self.bias.view(1, -1, 1, 1)
        act = c.get("activation", "linear")
        # The final softmax is left out: teachers return logits (log-probabilities here).
        if act == "relu":
            return F.relu(y)
        if act == "softmax":
            return F.log_softmax(y, dim=1)
        if act in ("linear", None):
            return y
        raise KerasFormatError(f"activation {act} is not supported")


#: A teacher's single weight tensor may not exceed this (the FER2013 Xceptions' largest is < 1 MB).
MAX_WEIGHT_BYTES = 256 * 2**20


def _read_weights(path: Path, key: str, ds):
    """One weight dataset, refused when it claims more than MAX_WEIGHT_BYTES or stores less than
    it claims: HDF5 fills unwritten datasets on read, so a few bytes of file could ask for gigabytes."""
    if ds.external or ds.is_virtual:
        # External storage and virtual datasets make HDF5 read other files into the weights
        # (export would then ship those bytes): a teacher's weights live in its own file only.
        raise KerasFormatError(f"{path.name}: weight {key} is stored outside the file "
                               f"({'external storage' if ds.external else 'a virtual dataset'}); "
                               "re-save the model with its weights inside the .h5 file")
    claimed = int(ds.size) * ds.dtype.itemsize
    stored = ds.id.get_storage_size()
    if claimed > MAX_WEIGHT_BYTES or (claimed > 0 and stored == 0) or (
            ds.compression is None and stored < claimed):
        raise KerasFormatError(f"{path.name}: weight {key} claims shape {ds.shape} ({claimed / 2**20:,.1f} MB) "
                               f"but stores {stored / 2**20:,.1f} MB; the file is damaged or crafted")
    return ds[()]


#: Deepest group nesting a Keras weight file needs (model_weights/layer/layer/var): more is crafted.
MAX_DEPTH = 16


def _own_member(path: Path, group, name: str, key: str):
    """``group[name]`` when it is a hard link inside this file; external and soft links are refused
    (an external link opens another file; a soft link can loop)."""
    import h5py

    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        raise KerasFormatError(f"{path.name}: {key} is a link to {'another file' if isinstance(link, h5py.ExternalLink) else 'another object'}; "
                               "a teacher's weights must be stored in its own file, not linked")
    return group[name]


def _layer_weights(path: Path, group, prefix: str, depth: int = 0) -> dict:
    """Every weight dataset under ``group`` (by variable name), walking hard links only."""
    import h5py

    if depth > MAX_DEPTH:
        raise KerasFormatError(f"{path.name}: groups nested deeper than {MAX_DEPTH} under {prefix}; the file is crafted")
    out = {}
    for name in group:
        key = f"{prefix}/{name}"
        obj = _own_member(path, group, name, key)
        if isinstance(obj, h5py.Group):
            out.update(_layer_weights(path, obj, key, depth + 1))
        elif isinstance(obj, h5py.Dataset):
            out[name.split(":")[0]] = _read_weights(path, key, obj)
    return out


class KerasGraph(nn.Module):
    """Executes the functional graph in the file's topological layer order."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import h5py

        path = Path(path)
        try:
            f = h5py.File(path, "r")
        except OSError:
            raise KerasFormatError(f"{path} is not an HDF5 file") from None
        try:
            with f:
                self._build(path, f)
        except KerasFormatError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, RecursionError, OSError,
                json.JSONDecodeError) as exc:
            raise KerasFormatError(f"{path} is not a readable Keras model: {type(exc).__name__}: "
                                   f"{str(exc)[:200]}; re-save it with Keras (model.save('x.h5'))") from None

    def _build(self, path: Path, f) -> None:
        if "model_config" not in f.attrs:
            raise KerasFormatError(f"{path} has no model_config: it holds weights only, not a full Keras model")
        raw = f.attrs["model_config"]
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        if cfg.get("class_name") not in ("Model", "Functional"):
            raise KerasFormatError(f"{path} is a Keras {cfg.get('class_name')}, not a functional Model")
        group = _own_member(path, f, "model_weights", "model_weights") if "model_weights" in f else f
        layers = nn.ModuleDict()
        self.inputs: dict[str, list[str]] = {}
        for spec in cfg["config"]["layers"]:
            name = spec["name"]
            weights = {}
            if name in group:
                member = _own_member(path, group, name, name)
                weights = _layer_weights(path, member, name) if hasattr(member, "keys") else {}
            layers[name] = KerasLayer(spec["class_name"], spec["config"], weights)
            self.inputs[name] = [n[0] for n in spec["inbound_nodes"][0]] if spec["inbound_nodes"] else []
        self.layers = layers
        self.order = list(self.inputs)
        self.output = cfg["config"]["output_layers"][0][0]
        # A layer may read only layers defined before it, and the output must be one of them:
        # otherwise the graph names a layer that is not there (or a cycle), found now, not mid-run.
        seen: set[str] = set()
        for name in self.order:
            missing = [i for i in self.inputs[name] if i not in seen]
            if missing:
                raise KerasFormatError(f"{path}: layer {name!r} reads {missing[0]!r}, which is not a layer defined "
                                       "before it; re-save the model with Keras (model.save('x.h5'))")
            seen.add(name)
        if self.output not in seen:
            raise KerasFormatError(f"{path}: the output layer {self.output!r} is not one of its layers; re-save the "
                                   "model with Keras (model.save('x.h5'))")
        first = cfg["config"]["layers"][0]["config"].get("batch_input_shape")
        self.input_shape = tuple(first[1:]) if first else None  # (H, W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {}
        for name in self.order:
            ins = [values[i] for i in self.inputs[name]] or [x]
            values[name] = self.layers[name](ins)
        return values[self.output]
