"""Shipper pre-advice (manifests): tracking number -> destination data, at hub scale.

A manifest is a CSV file with a header: `barcode` and at least one of `destination`,
`postcode`, `country`, `origin`; optionally `service`, `customs`, `weight_g` (validated, not
used); gzip-compressed when the name ends in `.gz`. Other columns are ignored. Rows are
parsed by a numba parser straight from the file's bytes, and indexed by an open-addressing
hash table over the full barcode bytes: a barcode that is not in the manifest never
matches another's row, whatever the hashes do. Later rows for the same barcode replace
earlier ones (files in order of modification time, then name).

Memory per row: the barcode in 32 bytes, the postcode's code and the other fields in 16,
the table ~7: under 64 bytes.

Modules: `rows` (a row as stored), `csv_parse` (the numba parser), `files` (one file, read
a chunk at a time), `index` (the combined rows and their hash table), `source` (which
files, rebuilt when they change), `jit` (the kernels' compilation).
"""

from sorter.manifest.csv_parse import (
    BAD_REASONS,
    COLUMNS,
    MAX_BAD_LINES_KEPT,
    ROUTING_COLUMNS,
)
from sorter.manifest.files import (
    READ_CHUNK_BYTES,
    FileReport,
    Readable,
    load_file,
    parse_manifest,
    parse_stream,
)
from sorter.manifest.index import Manifest, encode_key, encode_keys, warm
from sorter.manifest.rows import (
    KEY_BYTES,
    MAX_DEST_NAME_BYTES,
    ManifestPart,
    ManifestRow,
    pack_fields,
    unpack_row,
)
from sorter.manifest.source import FileSignature, ManifestSource, file_order_key, load_manifests

__all__ = [
    "BAD_REASONS",
    "COLUMNS",
    "KEY_BYTES",
    "MAX_BAD_LINES_KEPT",
    "MAX_DEST_NAME_BYTES",
    "READ_CHUNK_BYTES",
    "ROUTING_COLUMNS",
    "FileReport",
    "FileSignature",
    "Manifest",
    "ManifestPart",
    "ManifestRow",
    "ManifestSource",
    "Readable",
    "encode_key",
    "encode_keys",
    "file_order_key",
    "load_file",
    "load_manifests",
    "pack_fields",
    "parse_manifest",
    "parse_stream",
    "unpack_row",
    "warm",
]
