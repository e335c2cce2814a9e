"""Kernels: fp32 (training and inference) and int8 (TFLite-exact inference), NHWC.

Each fast kernel has a plain-NumPy twin in kernels/ref/ that tests hold it to."""
