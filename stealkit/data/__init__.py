"""Datasets: one in-memory form (`ImageSet`, uint8 N×3×H×W) and one entry point (`load_dataset`)."""

from stealkit.data.archives import decode_images, read_archive, scan_folder
from stealkit.data.cache import resolve_cache_dir
from stealkit.data.embedded import load_digits_set, load_synthetic_set, make_synthetic
from stealkit.data.imageset import ImageSet, resize_uint8, to_three_channels
from stealkit.data.registry import (
    DATASETS,
    DatasetInfo,
    DatasetNotFound,
    UnknownDataset,
    find_source,
    list_datasets,
    load_dataset,
    resolve_data_root,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFound",
    "ImageSet",
    "UnknownDataset",
    "decode_images",
    "find_source",
    "list_datasets",
    "load_dataset",
    "load_digits_set",
    "load_synthetic_set",
    "make_synthetic",
    "read_archive",
    "resize_uint8",
    "resolve_cache_dir",
    "resolve_data_root",
    "scan_folder",
    "to_three_channels",
]
