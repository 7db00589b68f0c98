"""Data layer: annotation JSONL, npz features, the packed HDF5 split, Dataset, collate and the
evaluation loader."""
from amr.data.annotations import DataError, Query, read_annotations
from amr.data.dataset import MomentDataset, collate_moments, eval_loader
from amr.data.pack import pack_split, report_path, summary_line

__all__ = [
    "DataError",
    "MomentDataset",
    "Query",
    "collate_moments",
    "eval_loader",
    "pack_split",
    "read_annotations",
    "report_path",
    "summary_line",
]
