"""Motion data sets: readers per source, processed-feature caches, splits and training windows."""

from .dataset import ClipCollection, MotionDataset, WindowBatch, load_dataset

__all__ = ["ClipCollection", "MotionDataset", "WindowBatch", "load_dataset"]
