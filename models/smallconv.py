"""SmallConv and SmallConvL: the LLS paper's MNIST / Fashion-MNIST / CIFAR models.

conv3x3 C1 [p=4] -> maxpool2 -> conv3x3 C2 [2] -> maxpool2 -> conv3x3 C3 [2]
-> adaptive-avgpool 2x2 -> linear F [F] -> linear K.  [p] is the block's LLS pool size.
"""


def _conv(filters, pool_size, post):
    return {"type": "conv", "filters": filters, "kernel": 3, "stride": 1, "padding": 1,
            "bias": True, "act": "leaky_relu", "pool_size": pool_size, "post": post}


def _smallconv(name, channels, hidden, num_classes, input_shape):
    c1, c2, c3 = channels
    maxpool = [{"type": "maxpool", "kernel": 2, "stride": 2}]
    return {
        "name": name,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "blocks": [
            _conv(c1, 4, maxpool),
            _conv(c2, 2, maxpool),
            _conv(c3, 2, [{"type": "adaptive_avgpool", "size": [2, 2]}]),
            {"type": "dense", "units": hidden, "bias": True, "act": "leaky_relu", "pool_size": hidden},
        ],
        "classifier": {"bias": True},
    }


def smallconv(num_classes=10, input_shape=(28, 28, 1)):
    return _smallconv("smallconv", (32, 64, 128), 512, num_classes, input_shape)


def smallconv_l(num_classes=10, input_shape=(28, 28, 1)):
    return _smallconv("smallconv-l", (96, 192, 512), 1024, num_classes, input_shape)
