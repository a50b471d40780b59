"""Layer-level rewrites of functional models, for Keras 3 and tf_keras alike.

:func:`replay` rebuilds a model layer by layer from each layer's own config, in the Keras
that built it, letting a transform change a layer's config or insert layers around it;
weights are copied by layer name (reshaped where a rewrite changes only their shape). It
needs no builder change, and keeps layer names and the weights order.

Two rewrites use it:

* :func:`to_xnnpack_form`: the form XNNPACK's sparse inference (and tfmot's
  ``PruneForLatencyOnXNNPack``) accepts: every stride-2 convolution as ``ZeroPadding2D``
  with symmetric padding ``k // 2`` and a ``'valid'`` convolution, and keepdims global
  pooling. The builder emits TF ``'same'`` padding (for even inputs 0 before and 1 after
  for k=3), so this shifts each stride-2 sampling grid by one pixel: weights carry over,
  outputs change slightly. Fine-tune afterwards (pruning does).
* :func:`pointwise_as_dense`: 1x1 stride-1 convolutions as ``Dense`` on the channel axis
  (the same maths), because tensorflow-model-optimization prunes in blocks only for
  2-D kernels.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["replay", "to_xnnpack_form", "pointwise_as_dense", "inbound_layer_names",
           "keras_module_of"]

# transform(layer, config, inputs, keras_module) -> output tensor, or None for "as is".
Transform = Callable[[Any, dict, Any, Any], Any]


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


def replay(model: Any, transform: Transform, input_size: int | None = None) -> Any:
    """A copy of functional ``model`` with ``transform`` applied to every layer.

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
            shape = tuple(layer.output.shape[1:])
            if input_size is not None:
                shape = (input_size, input_size, shape[-1])
            tensors[name] = keras_module.Input(shape=shape, name=name)
            inputs.append(tensors[name])
            continue
        sources = [tensors[n] for n in inbound_layer_names(configs[name])]
        x = sources[0] if len(sources) == 1 else sources
        config = layer.get_config()
        y = transform(layer, config, x, keras_module)
        tensors[name] = type(layer).from_config(config)(x) if y is None else y
    outputs = [tensors[t._keras_history[0].name] for t in _as_list(model.outputs)]
    rebuilt = keras_module.Model(inputs if len(inputs) > 1 else inputs[0],
                                 outputs if len(outputs) > 1 else outputs[0],
                                 name=model.name)
    copy_weights(model, rebuilt)
    return rebuilt


def copy_weights(source: Any, target: Any) -> None:
    """Weights of every ``source`` layer into ``target``'s layer of the same name,
    reshaped to the target's shapes (1x1 conv kernel <-> dense kernel). Works across
    Keras 3 and tf_keras."""
    for layer in source.layers:
        if not layer.weights:
            continue
        destination = target.get_layer(layer.name)
        shapes = [w.shape for w in destination.get_weights()]
        destination.set_weights([w.reshape(s) for w, s in zip(layer.get_weights(), shapes)])


def to_xnnpack_form(model: Any, keepdims_pooling: bool = True,
                    input_size: int | None = None) -> Any:
    """Stride-2 convolutions as ZeroPadding2D + 'valid', keepdims global pooling
    (followed by Flatten); see the module docstring."""

    def transform(layer, config, x, keras_module):
        layers = keras_module.layers
        strided = (isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D))
                   and tuple(config.get("strides", (1, 1))) != (1, 1)
                   and config.get("padding") == "same")
        if strided:
            pad = tuple((k // 2, k // 2) for k in config["kernel_size"])
            x = layers.ZeroPadding2D(padding=pad, name=f"{layer.name}_pad")(x)
            config["padding"] = "valid"
            return type(layer).from_config(config)(x)
        if (isinstance(layer, layers.GlobalAveragePooling2D) and keepdims_pooling
                and not config.get("keepdims", False)):
            config["keepdims"] = True
            y = type(layer).from_config(config)(x)
            return layers.Flatten(name=f"{layer.name}_flatten")(y)
        return None

    return replay(model, transform, input_size=input_size)


def pointwise_as_dense(model: Any, names: set[str] | None = None) -> Any:
    """1x1, stride-1, ungrouped ``Conv2D`` layers (those in ``names``, default all) as
    ``Dense`` layers of the same name, activation and bias: identical outputs."""

    def transform(layer, config, x, keras_module):
        layers = keras_module.layers
        if (type(layer) is layers.Conv2D and (names is None or layer.name in names)
                and tuple(config["kernel_size"]) == (1, 1)
                and tuple(config["strides"]) == (1, 1)
                and tuple(config.get("dilation_rate", (1, 1))) == (1, 1)
                and config.get("groups", 1) == 1):
            return layers.Dense(config["filters"], activation=config["activation"],
                                use_bias=config["use_bias"], name=layer.name)(x)
        return None

    return replay(model, transform)


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]
