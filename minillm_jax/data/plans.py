"""Which documents go to train and which to val, in which order: a source turned into a stream
of (split, val rank, text, set name) items, with the split's description for meta.json.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Iterator

import numpy as np

from minillm_jax.data import DataError
from minillm_jax.data.sources import LocalSource, ShakespeareSource, set_name_of

HUB_DATASET = "DKYoon/SlimPajama-6B"
# An item of the document stream: (split, val rank or None, text or None if skipped, set name).
Item = tuple[str, "int | None", "str | None", str]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class Plan:
    items: Iterator[Item]
    total: int
    description: str
    split: dict[str, Any]
    nbytes: int | None
    read_stats: Any


def split_ranks(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """rank_of[i] = position of record i in the val split, or -1 for train."""
    n_val = min(max(1, math.ceil(val_fraction * n)), n - 1)  # same expression as datasets
    perm = np.random.default_rng(seed).permutation(n)
    rank_of = np.full(n, -1, np.int64)
    rank_of[perm[:n_val]] = np.arange(n_val)
    return rank_of, n_val


def local_plan(src: LocalSource | ShakespeareSource, val_fraction: float, seed: int) -> Plan:
    n = src.count()
    if n == 0:
        raise DataError(f"{src.describe()} holds no documents")
    if n < 2:
        raise DataError(f"{src.describe()} holds only 1 document; need at least 2 "
                        "(one for train, one for val)")
    rank_of, n_val = split_ranks(n, val_fraction, seed)

    def items() -> Iterator[Item]:
        count = 0
        for text, name in src.records():
            if count >= n:
                count += 1
                break
            rank = int(rank_of[count])
            count += 1
            yield ("val", rank, text, name) if rank >= 0 else ("train", None, text, name)
        if count != n:
            raise DataError(f"{src.describe()} changed while it was read "
                            f"({n} records counted, {'more' if count > n else count} read)")

    split = {"method": "seeded permutation of records, datasets.train_test_split semantics: "
                       "val = default_rng(seed).permutation(n)[:ceil(val_fraction*n)], written in "
                       "permutation order; train written in source order",
             "split_seed": seed, "val_fraction": val_fraction, "records": n, "val_records": n_val}
    return Plan(items(), n, src.describe(), split, getattr(src, "nbytes", None), src.stats)


def hub_plan(val_fraction: float, seed: int, num_proc: int) -> Plan:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"--dataset slimpajama without --source reads {HUB_DATASET} from the Hugging Face hub "
            "and needs the `datasets` package: pip install 'minillm-jax[data]', or pass --source "
            "with local .parquet/.jsonl/.jsonl.zst/.txt files") from None
    _log(f"loading {HUB_DATASET} with datasets (about 14 GB download on first use) ...")
    try:
        dataset = datasets.load_dataset(HUB_DATASET, num_proc=num_proc)
        split = dataset["train"].train_test_split(test_size=val_fraction, seed=seed, shuffle=True)
    except Exception as err:  # offline: ConnectionError, LocalEntryNotFoundError, OfflineModeIsEnabled...
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise DataError(f"could not load {HUB_DATASET} from the hub ({type(err).__name__}: {first}); "
                        "check network access, or pass --source with local files") from None
    val_ds, train_ds = split["test"], split["train"]

    def items() -> Iterator[Item]:
        for name, ds in (("val", val_ds), ("train", train_ds)):
            rank = 0
            for batch in ds.iter(batch_size=1000):
                texts = batch["text"]
                metas = batch.get("meta") or [None] * len(texts)
                for text, meta in zip(texts, metas):
                    yield (name, rank if name == "val" else None, "" if text is None else text,
                           set_name_of(meta, "unknown"))
                    rank += 1

    info = {"method": f"{HUB_DATASET}['train'].train_test_split(test_size={val_fraction}, "
                      f"seed={seed}, shuffle=True); 'test' -> val (llm-baselines)",
            "split_seed": seed, "val_fraction": val_fraction, "records": len(val_ds) + len(train_ds),
            "val_records": len(val_ds)}
    return Plan(items(), len(val_ds) + len(train_ds),
                 f"hub {HUB_DATASET} (datasets {datasets.__version__})", info, None, None)
