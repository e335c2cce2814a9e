"""VGG8 as in the LLS paper (CIFAR-size input). [p] is each block's LLS pool size.

conv128 [4], conv256 [2], maxpool, conv256 [2], conv256 [2], maxpool, conv512 [2],
maxpool, conv512 [2], adaptive-avgpool 2x2, linear 1024 [1024], linear K.
All convs 3x3, stride 1, padding 1, with bias, then batch norm, then LeakyReLU(0.01).
"""


def vgg8(num_classes=10, input_shape=(32, 32, 3)):
    def conv(filters, pool_size, post=()):
        return {"type": "conv", "filters": filters, "kernel": 3, "stride": 1, "padding": 1,
                "bias": True, "act": "leaky_relu", "pool_size": pool_size, "post": list(post)}

    maxpool = {"type": "maxpool", "kernel": 2, "stride": 2}
    return {
        "name": "vgg8",
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "blocks": [
            conv(128, 4),
            conv(256, 2, [maxpool]),
            conv(256, 2),
            conv(256, 2, [maxpool]),
            conv(512, 2, [maxpool]),
            conv(512, 2, [{"type": "adaptive_avgpool", "size": [2, 2]}]),
            {"type": "dense", "units": 1024, "bias": True, "act": "leaky_relu", "pool_size": 1024},
        ],
        "classifier": {"bias": True},
    }
