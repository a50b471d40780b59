"""keras_effnet: EfficientNet V1, V1-lite and V2 for Keras 3, from block-spec strings."""

from keras_effnet.builder import build, resolve_variant
from keras_effnet.profile import Profile, profile
from keras_effnet.scaling import compound, round_filters, round_repeats
from keras_effnet.spec import BlockSpec, SpecError, format_arch, parse, parse_arch
from keras_effnet.spec import format as format_spec
from keras_effnet.variants import Variant, get_variant, list_models

__version__ = "0.1.0"

__all__ = [
    "BlockSpec", "Profile", "SpecError", "Variant", "build", "compound", "format_arch",
    "format_spec", "get_variant", "list_models", "parse", "parse_arch", "profile",
    "resolve_variant", "round_filters", "round_repeats",
]
