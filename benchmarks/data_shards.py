"""`langclip data shards` (a Hugging Face-style Parquet table holding its pictures -> webdataset shards) against
the floor of the same job on the same disk, same run: copying the table's file (`shutil.copyfile`, the bytes read
and written once, no parsing). Pictures: distinct 500x375 JPEGs (about 20-60 KB, a web photo's size), with a
Russian and an English caption a row; the table written with pyarrow in `datasets`' Image type (struct of bytes
and path), row groups of 1,000 rows.

    python benchmarks/data_shards.py --rows 20000 > benchmarks/results/cpu_data_shards.jsonl

Prints JSON lines: the machine; then each of `--repeats` alternating measurements of the copy and the
conversion (a fresh output folder each time), rows/s and MB/s of the table's size; then the medians.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_table(path: Path, rows: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(375 // 8, 500 // 8, 3), dtype=np.uint8)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    writer = None
    for start in range(0, rows, 1000):
        pics = []
        for i in range(start, min(start + 1000, rows)):
            tile = np.roll(base, i, axis=(0, 1)) ^ np.uint8(i % 251)   # distinct pictures, smooth enough to compress
            buf = io.BytesIO()
            Image.fromarray(tile).resize((500, 375), Image.BILINEAR).save(buf, "JPEG", quality=85)
            pics.append({"bytes": buf.getvalue(), "path": f"{i:07d}.jpg"})
        n = len(pics)
        t = pa.table({"image": pa.array(pics, type=image), "caption": [f"фото номер {i}" for i in range(start, start + n)],
                      "caption_en": [f"photo number {i}" for i in range(start, start + n)]})
        writer = writer or pq.ParquetWriter(str(path), t.schema)
        writer.write_table(t)
    writer.close()
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--shard-size", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from langclip.shards import write_shards

    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "python": platform.python_version()}), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="data_shards_"))
    try:
        table = tmp / "train-00000-of-00001.parquet"
        size = make_table(table, a.rows)
        mb = size / 1e6
        rows = {"copy": [], "data_shards": []}
        for r in range(a.repeats):
            for kind in ("copy", "data_shards"):
                out = tmp / f"out-{kind}-{r}"
                t0 = time.perf_counter()
                if kind == "copy":
                    out.mkdir()
                    shutil.copyfile(table, out / table.name)
                    os.sync()
                else:
                    with contextlib.redirect_stdout(sys.stderr):   # its summary line: not a result line
                        write_shards([str(table)], out, shard_size=a.shard_size, progress=False)
                    os.sync()
                s = time.perf_counter() - t0
                rows[kind].append(s)
                print(json.dumps({"kind": kind, "repeat": r, "rows": a.rows, "table_mb": round(mb, 1), "seconds": round(s, 3),
                                  "rows_per_s": round(a.rows / s), "mb_per_s": round(mb / s, 1)}), flush=True)
                shutil.rmtree(out)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(json.dumps({"median": True, "rows": a.rows, "table_mb": round(mb, 1),
                          **{f"{k}_rows_per_s": round(a.rows / v) for k, v in med.items()},
                          **{f"{k}_mb_per_s": round(mb / v, 1) for k, v in med.items()},
                          "data_shards_vs_copy": round(med["data_shards"] / med["copy"], 2)}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
