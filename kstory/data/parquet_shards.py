"""Reads and writes StoryReasoning-layout parquet shards."""

import glob
import os

import pyarrow as pa
import pyarrow.parquet as pq

STORY_REASONING_SCHEMA = pa.schema(
    [
        ("story_id", pa.string()),
        (
            "images",
            pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ),
        ("frame_count", pa.int32()),
        ("chain_of_thought", pa.string()),
        ("story", pa.string()),
    ]
)


def write_shards(rows, directory, split, num_shards=1):
    """Writes rows as `data/<split>-0000i-of-0000n.parquet`, as on the HF Hub.

    Args:
        rows: list of dicts with the StoryReasoning columns.
        directory: str. The dataset folder; shards go to its `data/`.
        split: str. Split name used in the file names (`train`, `test`).
        num_shards: int. Number of files the rows are spread over.

    Returns:
        The list of written paths.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1; got {num_shards}.")
    data_dir = os.path.join(directory, "data")
    os.makedirs(data_dir, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = os.path.join(data_dir, f"{split}-{shard:05d}-of-{num_shards:05d}.parquet")
        table = pa.Table.from_pylist(rows[shard::num_shards], schema=STORY_REASONING_SCHEMA)
        pq.write_table(table, path)
        paths.append(path)
    return paths


def find_shards(path, split):
    """Lists the parquet shards of `split` under a downloaded dataset folder.

    Accepts the folder of a Hub download (`<path>/data/<split>-*.parquet`),
    a folder holding the shards directly, or one parquet file.
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ValueError(f"No StoryReasoning data at {path!r}: not a file or folder.")
    for pattern in (f"data/{split}-*.parquet", f"{split}-*.parquet", f"{split}/*.parquet"):
        shards = sorted(glob.glob(os.path.join(path, pattern)))
        if shards:
            return shards
    raise ValueError(
        f"No parquet shards for split {split!r} under {path!r} "
        f"(looked for data/{split}-*.parquet, {split}-*.parquet, {split}/*.parquet)."
    )


def find_shards_or_none(path, split):
    """Like `find_shards`, but an empty list when there are none."""
    try:
        return find_shards(path, split)
    except ValueError:
        return []


def _decoded(value):
    """UTF-8 bytes as str; other bytes stay bytes for the reader to refuse."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def iter_rows(shards, batch_size=32):
    """Yields `(location, row)` for each row, location naming shard and row.

    Text columns are decoded row by row: a value that is not valid UTF-8 is
    yielded as bytes, so one bad row cannot stop the whole shard (pyarrow
    would raise for the batch).
    """
    for shard in shards:
        parquet_file = pq.ParquetFile(shard)
        missing = set(STORY_REASONING_SCHEMA.names) - set(parquet_file.schema_arrow.names)
        if "story" in missing or "images" in missing:
            raise ValueError(
                f"{shard} lacks the column(s) {sorted(missing)}; expected the "
                f"StoryReasoning columns {STORY_REASONING_SCHEMA.names}."
            )
        row_index = 0
        for batch in parquet_file.iter_batches(batch_size=batch_size):
            text_columns = [
                name
                for name, field in zip(batch.schema.names, batch.schema)
                if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
            ]
            for name in text_columns:
                index = batch.schema.get_field_index(name)
                binary = (
                    pa.large_binary()
                    if pa.types.is_large_string(batch.schema.field(index).type)
                    else pa.binary()
                )
                batch = batch.set_column(index, name, batch.column(index).cast(binary))
            for row in batch.to_pylist():
                for name in text_columns:
                    if row[name] is not None:
                        row[name] = _decoded(row[name])
                yield f"{os.path.basename(shard)}:{row_index}", row
                row_index += 1
