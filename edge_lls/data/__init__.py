"""Dataset readers and batch streaming.

Every dataset arrives as a Dataset with train and test Splits. A Split streams
(x (B,H,W,C) float32, y (B,) int64) batches, converting only the current batch to float.

    ds = load_dataset("mnist", "../shared/data/mnist", val_split=0.2)
    for x, y in ds.train.batches(64, shuffle=True, seed=0, epoch=3, start_batch=10): ...
"""
from edge_lls.data.dataset import Dataset
from edge_lls.data.registry import DATASET_NAMES, load_dataset
from edge_lls.data.split import Split

__all__ = ["DATASET_NAMES", "Dataset", "Split", "load_dataset"]
