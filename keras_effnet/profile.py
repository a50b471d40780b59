"""Parameters and multiply-adds from the architecture alone: no TensorFlow graph.

Counts follow the layers :mod:`keras_effnet.builder` creates, so ``params`` equals the
built model's ``count_params()`` (BatchNorm moving statistics included) and
``trainable_params`` its trainable count. MACs count the multiply-adds of convolutions
and dense layers, as the papers' FLOPs columns do; BatchNorm, activations, pooling and
the squeeze-excite multiply are left out.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from keras_effnet import spec as spec_lib
from keras_effnet.variants import Variant, count, get_variant, resolve_variant, size_error

__all__ = ["Profile", "profile", "scale_to_macs", "check_buildable", "MAX_PARAMS"]

# Parameters a buildable network may have: about twice efficientnet-l2's 481 million
# (4 GB of float32 weights before any optimizer state). Larger requests (a typo in width,
# a block string with a huge r or i/o) are refused before Keras allocates anything.
MAX_PARAMS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    params: int
    trainable_params: int
    macs: int
    image_size: int
    blocks: int
    classes: int
    include_top: bool

    @property
    def non_trainable_params(self) -> int:
        return self.params - self.trainable_params


class _Counter:
    def __init__(self, size: int):
        self.size = size  # current spatial size (square)
        self.params = 0
        self.trainable = 0
        self.macs = 0

    def conv(self, cin: int, cout: int, kernel: int, strides: int = 1, bias: bool = False,
             depthwise: bool = False) -> None:
        self.size = -(-self.size // strides)  # 'same' padding: ceil(size / stride)
        weights = kernel * kernel * (cin if not depthwise else 1) * cout
        n = weights + (cout if bias else 0)
        self.params += n
        self.trainable += n
        self.macs += self.size * self.size * weights

    def pointwise_1x1(self, cin: int, cout: int) -> None:
        # Squeeze-excite convs run on the pooled 1x1 map.
        n = cin * cout + cout
        self.params += n
        self.trainable += n
        self.macs += cin * cout

    def bn(self, channels: int) -> None:
        self.params += 4 * channels  # gamma, beta trainable; moving mean, var not
        self.trainable += 2 * channels


def profile(name_or_arch: str | Variant | Sequence[str | spec_lib.BlockSpec],
            image_size: int | None = None, classes: int = 1000, include_top: bool = True,
            width: float | None = None, depth: float | None = None) -> Profile:
    """Parameters and MACs of a variant (or a custom architecture) at ``image_size``
    (default: the variant's evaluation size)."""
    variant = resolve_variant(name_or_arch, width=width, depth=depth)
    size = int(image_size or variant.eval_size)
    if size <= 0:
        raise ValueError(f"image_size must be > 0. Received: image_size={image_size}")
    c = _Counter(size)
    stem = variant.stem()
    c.conv(3, stem, 3, strides=2)
    c.bn(stem)
    channels = stem
    blocks = variant.scaled_blocks()
    for b in blocks:
        cin = channels
        expanded = cin * b.expand_ratio
        if b.fused:
            if b.expand_ratio != 1:
                c.conv(cin, expanded, b.kernel_size, b.strides)
                c.bn(expanded)
            if b.se_ratio:
                c.pointwise_1x1(expanded, max(1, int(cin * b.se_ratio)))
                c.pointwise_1x1(max(1, int(cin * b.se_ratio)), expanded)
            if b.expand_ratio != 1:
                c.conv(expanded, b.output_filters, 1)
            else:
                c.conv(cin, b.output_filters, b.kernel_size, b.strides)
            c.bn(b.output_filters)
        else:
            if b.expand_ratio != 1:
                c.conv(cin, expanded, 1)
                c.bn(expanded)
            c.conv(expanded, expanded, b.kernel_size, b.strides, depthwise=True)
            c.bn(expanded)
            if b.se_ratio:
                c.pointwise_1x1(expanded, max(1, int(cin * b.se_ratio)))
                c.pointwise_1x1(max(1, int(cin * b.se_ratio)), expanded)
            c.conv(expanded, b.output_filters, 1)
            c.bn(b.output_filters)
        channels = b.output_filters
    head = variant.head()
    c.conv(channels, head, 1)
    c.bn(head)
    if include_top:
        c.params += head * classes + classes
        c.trainable += head * classes + classes
        c.macs += head * classes
    return Profile(name=variant.name, params=c.params, trainable_params=c.trainable,
                   macs=c.macs, image_size=size, blocks=len(blocks), classes=classes,
                   include_top=include_top)


def check_buildable(variant: Variant, classes: int = 1000, include_top: bool = True
                    ) -> Profile:
    """:func:`profile` of ``variant``, or :class:`~keras_effnet.errors.ConfigError` when
    it cannot be built in memory: more than :data:`~keras_effnet.variants.MAX_BLOCKS`
    blocks (field ``depth``) or :data:`MAX_PARAMS` parameters (field ``width``). Pure
    Python: milliseconds, whatever the sizes asked for."""
    result = profile(variant, image_size=max(8, min(variant.eval_size, 1024)),
                     classes=classes, include_top=include_top)
    if result.params > MAX_PARAMS:
        raise size_error(variant, f"{count(result.params)} parameters "
                         f"({count(result.params * 4 // 10 ** 9)} GB of float32 weights)",
                         f"{MAX_PARAMS:,}", "efficientnet-l2 has 481,399,996", "width",
                         "filters", max(max(b.input_filters, b.output_filters)
                                        for b in variant.block_specs))
    return result


def scale_to_macs(base: str | Variant, target_macs: float, *, alpha: float = 1.2,
                  beta: float = 1.1, gamma: float = 1.15, tolerance: float = 0.10,
                  image_size: int | None = None) -> Variant:
    """Compound-scales ``base`` to a MACs budget: the paper's "how would you scale the
    network if you suddenly had twice the resources?".

    Searches the compound coefficient phi (depth alpha**phi, width beta**phi, resolution
    gamma**phi, all relative to ``base``) for the variant whose profiled MACs are closest
    to ``target_macs``, and returns it (with ``eval_size``/``train_size`` scaled).

    Raises:
        ValueError: no phi in [-6, 10] comes within ``tolerance`` of the target (width,
            depth and rounding are discrete, so very small targets can be out of reach).
    """
    from keras_effnet.scaling import compound

    base = get_variant(base)
    if not target_macs > 0:
        raise ValueError(f"target_macs must be > 0. Received: target_macs={target_macs}")
    size0 = image_size or base.eval_size

    def at(phi: float) -> tuple[Variant, int]:
        d, w, r = compound(phi, alpha, beta, gamma)
        size = max(8, int(round(size0 * r)))
        train = max(8, int(round(base.train_size * r)))
        v = base.replace(name=f"{base.name}-phi{phi:+.2f}", width=base.width * w,
                         depth=base.depth * d, eval_size=size, train_size=train,
                         paper_top1=None, paper_params_m=None, paper_macs_b=None)
        return v, profile(v, image_size=size).macs

    lo, hi = -6.0, 10.0
    tried = [at(lo), at(hi)]
    for _ in range(40):  # MACs grow with phi (up to rounding steps): bisect.
        mid = (lo + hi) / 2
        tried.append(at(mid))
        if tried[-1][1] < target_macs:
            lo = mid
        else:
            hi = mid
    best, macs = min(tried, key=lambda t: abs(t[1] - target_macs))
    if abs(macs - target_macs) > tolerance * target_macs:
        raise ValueError(f"No compound scaling of {base.name} comes within {tolerance:.0%} of "
                         f"{target_macs:.3g} MACs (closest: {macs:.3g}). Choose another base.")
    return best
