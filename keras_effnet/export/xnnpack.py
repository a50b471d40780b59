"""Rewrites a functional model into the form XNNPACK's sparse inference accepts.

``PruneForLatencyOnXNNPack`` (and XNNPACK itself) want every stride-2 convolution as
``ZeroPadding2D`` with symmetric padding ``k // 2`` followed by a ``'valid'``
convolution, and global average pooling with ``keepdims=True``. The builder emits
TF ``'same'`` padding (for even inputs: 0 before, 1 after for k=3), so the rewrite
shifts the sampling grid of each stride-2 layer by one pixel: the weights carry over
unchanged but the outputs are *not* identical. Fine-tune afterwards (pruning does).

The rewrite replays the graph layer by layer from each layer's own config, in the same
Keras (Keras 3 or tf_keras), so it needs no builder change and keeps layer names and
weights order (new layers are weightless).
"""

from __future__ import annotations

from typing import Any

__all__ = ["to_xnnpack_form", "inbound_layer_names", "keras_module_of"]


def keras_module_of(model: Any):
    """``keras`` or ``tf_keras``: whichever built ``model``."""
    if type(model).__module__.startswith("tf_keras"):
        import tf_keras
        return tf_keras
    import keras
    return keras


def _history_names(node: Any) -> list[str]:
    """Layer names in a Keras 3 serialised node (``__keras_tensor__`` entries)."""
    names: list[str] = []
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            names.append(node["config"]["keras_history"][0])
        else:
            for value in node.values():
                names += _history_names(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            names += _history_names(value)
    return names


def inbound_layer_names(layer_config: dict[str, Any]) -> list[str]:
    """Names of the layers feeding a layer, from ``model.get_config()["layers"][i]``.

    Handles both formats: Keras 3 (``{"args": [...], "kwargs": {...}}``) and tf_keras
    (``[[name, node_index, tensor_index, kwargs], ...]``). Only single-call layers
    (every layer the builder makes) are supported.
    """
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ValueError(f"Layer {layer_config.get('name')!r} is called more than once; "
                         "only single-call functional graphs can be rewritten.")
    if not nodes:
        return []
    node = nodes[0]
    if isinstance(node, dict):
        return _history_names(node.get("args", []))
    return [entry[0] for entry in node]


def to_xnnpack_form(model: Any, keepdims_pooling: bool = True,
                    input_size: int | None = None) -> Any:
    """A copy of ``model`` with stride-2 convolutions as ZeroPadding2D + 'valid' and
    keepdims global pooling (followed by Flatten), weights copied.

    ``input_size`` fixes a square input shape (XNNPACK and TFLite want static shapes).
    """
    keras_module = keras_module_of(model)
    layers = keras_module.layers
    configs = {c["name"]: c for c in model.get_config()["layers"]}
    tensors: dict[str, Any] = {}
    inputs = []
    for layer in model.layers:
        name = layer.name
        if isinstance(layer, layers.InputLayer):
            shape = tuple(layer.output.shape[1:]) if hasattr(layer, "output") else None
            if input_size is not None:
                shape = (input_size, input_size, shape[-1])
            tensors[name] = keras_module.Input(shape=shape, name=name)
            inputs.append(tensors[name])
            continue
        sources = [tensors[n] for n in inbound_layer_names(configs[name])]
        x = sources[0] if len(sources) == 1 else sources
        config = layer.get_config()
        strided = (isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D))
                   and tuple(config.get("strides", (1, 1))) != (1, 1)
                   and config.get("padding") == "same")
        if strided:
            kernel = tuple(config["kernel_size"])
            pad = tuple((k // 2, k // 2) for k in kernel)
            x = layers.ZeroPadding2D(padding=pad, name=f"{name}_pad")(x)
            config["padding"] = "valid"
        flatten = (isinstance(layer, layers.GlobalAveragePooling2D) and keepdims_pooling
                   and not config.get("keepdims", False))
        if flatten:
            config["keepdims"] = True
        y = type(layer).from_config(config)(x)
        if flatten:
            y = layers.Flatten(name=f"{name}_flatten")(y)
        tensors[name] = y
    outputs = [tensors[t._keras_history[0].name] for t in _as_list(model.outputs)]
    rebuilt = keras_module.Model(inputs if len(inputs) > 1 else inputs[0],
                                 outputs if len(outputs) > 1 else outputs[0],
                                 name=model.name)
    for layer in model.layers:
        if layer.weights:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
    return rebuilt


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
