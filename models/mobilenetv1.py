"""MobileNetV1 for wake-word scale tasks (Visual Wake Words: width 0.25, 96x96).

Geometry follows the MLPerf Tiny VWW model (TensorFlow 'same' padding, so stride-2
layers pad bottom/right), so imported .tflite weights map onto these blocks one to one.
Each depthwise-separable pair (depthwise 3x3 -> BN -> act -> pointwise 1x1 -> BN -> act)
is one LLS block. Pool sizes per block follow the LLS reference MobileNetV1:
8 for the stem, 4 for the next three blocks, 2 for the middle, 1 for the last two.
"""

# (output channels at width 1.0, depthwise stride) for the 13 separable blocks.
_SEPARABLE = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
_POOL_SIZES = [8, 4, 4, 4, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]


def _scaled(channels, width):
    return max(8, int(channels * width))


def mobilenetv1(num_classes=2, input_shape=(96, 96, 3), width=0.25, act="leaky_relu"):
    blocks = [{"type": "conv", "filters": _scaled(32, width), "kernel": 3, "stride": 2,
               "padding": "same", "bias": False, "act": act, "pool_size": _POOL_SIZES[0], "post": []}]
    for (channels, stride), pool_size in zip(_SEPARABLE, _POOL_SIZES[1:]):
        blocks.append({"type": "dwsep", "filters": _scaled(channels, width), "kernel": 3,
                       "stride": stride, "padding": "same", "bias": False, "act": act,
                       "pool_size": pool_size, "post": []})
    blocks[-1]["post"] = [{"type": "adaptive_avgpool", "size": [1, 1]}]
    return {
        "name": "mobilenetv1",
        "width": width,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "blocks": blocks,
        "classifier": {"bias": True},
    }
