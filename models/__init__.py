"""The model zoo, as data: each model is a function returning a declarative spec.

Installed as `edge_lls.zoo`. Names are the ones every command takes (`--model NAME`).
"""
from . import mobilenetv1, smallconv, vgg8

MODELS = {
    "smallconv": smallconv.smallconv,
    "smallconv-l": smallconv.smallconv_l,
    "vgg8": vgg8.vgg8,
    "mobilenetv1": mobilenetv1.mobilenetv1,
}

DEFAULT_INPUT = {
    "smallconv": (28, 28, 1),
    "smallconv-l": (28, 28, 1),
    "vgg8": (32, 32, 3),
    "mobilenetv1": (96, 96, 3),
}
