"""Layer 2, data: annotation JSONL (``annotations``), npz features (``features``), the packed
HDF5 split (``pack``), the torch Dataset and collate (``dataset``), the demo data (``demo``), the
feature sources of ``data.source`` (``sources``) and the official downloads (``download``).

Import the module you need: this package imports nothing itself, so that packing features does
not pull in torch.

May import: amr.util, amr.config.
"""
