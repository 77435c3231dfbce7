"""A store written directly with zarr v3, laid out as reprflow's store writer lays it out.

Shared by tests/pipeline/test_probe_stage.py and test_token_metrics.py, which build small stores
with planted values instead of extracting them (docs/CONTRACTS.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec

from reprflow.store import DIMS


def write_contract_arrays(path: Path, arrays: dict[str, np.ndarray]) -> zarr.Group:
    """A new zarr v3 group at ``path`` holding ``arrays`` (name -> data) as the writer stores them.

    Dimension names from :data:`reprflow.store.DIMS`; a state per chunk of ``last``, a state and a
    prompt per chunk of ``tokens``, one chunk for the 1-D arrays; every chunk written (zeros too)
    and checksummed (crc32c), so that ``open_store`` finds nothing missing and warns of nothing.
    Returns the group, for its attributes.
    """
    group = zarr.create_group(store=str(path), zarr_format=3)
    for name, data in arrays.items():
        chunks = {"last": (1, *data.shape[1:]), "tokens": (1, 1, *data.shape[2:])}.get(name, data.shape)
        array = group.create_array(
            name,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks,
            dimension_names=DIMS[name],
            compressors=[Crc32cCodec()],
            config={"write_empty_chunks": True},
        )
        array[...] = data
    return group
