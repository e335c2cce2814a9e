"""Look up and build zoo models by the names every command takes."""
from __future__ import annotations

from .errors import ConfigError
from .nn.model import Model
from .zoo import DEFAULT_INPUT, MODELS


def model_names() -> list[str]:
    return sorted(MODELS)


def model_spec(name: str, num_classes: int = 10, input_shape=None, **options) -> dict:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    shape = tuple(input_shape) if input_shape is not None else DEFAULT_INPUT[name]
    return MODELS[name](num_classes=num_classes, input_shape=shape, **options)


def build_model(name: str, num_classes: int = 10, input_shape=None, seed: int = 0, **options) -> Model:
    """build_model('smallconv', 10, (28, 28, 1)); MobileNetV1 takes width=0.25."""
    return Model(model_spec(name, num_classes, input_shape, **options), seed=seed)
