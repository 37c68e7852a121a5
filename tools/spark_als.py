#!/usr/bin/env python3
"""Trains Spark MLlib's implicit ALS on a shopdb interaction export and writes the factors in
`EXPORT MODEL mf`'s layout (user_factors.parquet, item_factors.parquet: `id`, the application's
string ids; `features`, list<float32>) for the engine to import.

    tools/spark_als.py INPUT OUTPUT [--factors F] [--reg-param R] [--alpha A] [--iterations I]
        [--seed S] [--master local[2]] [--driver-memory 4g]

INPUT, a Parquet file or a folder searched recursively for *.parquet (`EXPORT EVENTS` writes
`day=YYYY-MM-DD/part-0.parquet`), holds interactions (`user`, `item`, `weight`) or events (`user`,
`item`, `kind`, `value`, `ts`; weighed by kind as the engine's defaults: view 1, click 2, cart 4,
purchase 8, rating 1), told by the columns; weights are summed per (user, item). The folder's
mf_params.json (`factors`, `regularization`, `alpha`, `iterations`) sets defaults, flags override;
built in: 64 factors, alpha 1, 15 iterations, seed 42.

Regularisation: the engine adds its lambda as-is to each user's and item's normal equations;
Spark (ALS-WR) adds regParam * n, n the positive pairs of that user or item (both use confidence
1 + alpha*|w|). Without --reg-param: regParam = lambda / (mean positive pairs per user), lambda
from mf_params.json else the engine's 20, so an average user gets the engine's penalty. Spark has
one regParam for both sides: an average item gets lambda * users / items.

Ids are factorised with pyarrow (sorted, dense int32) and handed to Spark as a temporary Parquet
file. Output goes to OUTPUT.partial/, renamed when complete; an existing OUTPUT is refused. The
last stdout line is a JSON summary (fit_seconds: ALS.fit alone; wall_seconds: the whole run).
Exit 2: bad input, parameters or output; exit 3: pyarrow, numpy, pyspark or java missing.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()
try:  # checked in check_dependencies, so that a missing pyarrow exits 3
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
except ImportError:
    pa = None

KIND_WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0, "rating": 1.0}
LAYOUTS = {"interactions": ("user", "item", "weight"),
           "events": ("user", "item", "kind", "value", "ts")}
DEFAULTS = {"factors": 64, "regularization": 20.0, "alpha": 1.0, "iterations": 15}


class Refused(Exception):
    """Bad input, parameters or output path: exit 2."""


def die(code, message):
    print(f"spark_als: {message}", file=sys.stderr)
    sys.exit(code)


def check_dependencies():
    """Exits 3 (tests skip on it) when a Python package or Java is missing."""
    for module in ("pyarrow", "numpy", "pyspark"):
        try:
            __import__(module)
        except ImportError:
            die(3, f"{module} is not installed; Spark ALS needs it")
    java_home = os.environ.get("JAVA_HOME")
    if not ((java_home and Path(java_home, "bin", "java").exists()) or shutil.which("java")):
        die(3, "java is not installed (no JAVA_HOME, none on PATH); Spark needs Java 17+")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path, help="Parquet file or folder")
    p.add_argument("output", type=Path, help="new folder for the factor files")
    for flag, kind in (("--factors", int), ("--reg-param", float), ("--alpha", float),
                       ("--iterations", int)):
        p.add_argument(flag, type=kind)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--driver-memory", default="4g")
    return p.parse_args()


def hyper_parameters(args):
    """DEFAULTS, then INPUT/mf_params.json, then the flags; validated."""
    params, path = dict(DEFAULTS), args.input / "mf_params.json"
    if args.input.is_dir() and path.is_file():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise Refused(f"{path}: {e}")
        for key in DEFAULTS.keys() & found.keys():
            if isinstance(found[key], bool) or not isinstance(found[key], (int, float)):
                raise Refused(f"{path}: {key} is not a number")
            params[key] = found[key]
    params.update({k: getattr(args, k) for k in ("factors", "alpha", "iterations")
                   if getattr(args, k) is not None})
    for key in ("factors", "iterations"):
        if params[key] != int(params[key]) or params[key] < 1:
            raise Refused(f"{key} must be a whole number >= 1, not {params[key]}")
        params[key] = int(params[key])
    for key, v in (("regularization", params["regularization"]), ("alpha", params["alpha"]),
                   ("--reg-param", 0.0 if args.reg_param is None else args.reg_param)):
        if not (math.isfinite(v) and v >= 0):
            raise Refused(f"{key} must be >= 0, not {v}")
    return {**params, "regularization": float(params["regularization"]),
            "alpha": float(params["alpha"])}


def read_log(path):
    """(layout, files, table of user, item, weight) from every Parquet file under `path`."""
    if not path.exists():
        raise Refused(f"{path}: no such file or folder")
    files = sorted(f for f in path.rglob("*.parquet") if f.is_file()) if path.is_dir() else [path]
    if not files:
        raise Refused(f"{path}: no *.parquet file in it")
    tables, layouts = [], set()
    for f in files:
        try:
            names = set(pq.read_schema(f).names)
            layout = next((k for k, cols in LAYOUTS.items() if names.issuperset(cols)), None)
            if layout is None:
                raise Refused(f"{f}: columns {sorted(names)} are neither interactions "
                              f"{LAYOUTS['interactions']} nor events {LAYOUTS['events']}")
            cols = ["user", "item", "weight" if layout == "interactions" else "kind"]
            types = [pa.float32() if c == "weight" else pa.string() for c in cols]
            t = pq.ParquetFile(f).read(columns=cols).select(cols)
            tables.append(t.cast(pa.schema(list(zip(cols, types)))))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
            raise Refused(f"{f}: {e}")
        layouts.add(layout)
    if len(layouts) > 1:
        raise Refused(f"{path}: files of both layouts")
    t = pa.concat_tables(tables)
    if "kind" in t.column_names:
        kind = pc.index_in(t["kind"], value_set=pa.array(list(KIND_WEIGHTS)))
        unknown = pc.unique(t["kind"].filter(pc.is_null(kind))).to_pylist()
        if unknown:
            raise Refused(f"{path}: unknown event kinds {unknown[:5]}, not in {list(KIND_WEIGHTS)}")
        weight = pc.take(pa.array(list(KIND_WEIGHTS.values()), pa.float32()), kind)
        t = pa.table({"user": t["user"], "item": t["item"], "weight": weight})
    return layouts.pop(), len(files), t


def pairs_of(t):
    """Drops incomplete rows, factorises the ids, sums weights per pair: (users, items, pairs)."""
    kept = t.filter(pc.and_(pc.and_(pc.is_valid(t["user"]), pc.is_valid(t["item"])),
                            pc.is_finite(t["weight"])))
    if kept.num_rows < t.num_rows:
        print(f"spark_als: skipped {t.num_rows - kept.num_rows} rows with a null id or a "
              "null or non-finite weight", file=sys.stderr)
    if kept.num_rows == 0:
        raise Refused("no usable rows in the input")

    def factorise(column):  # sorted distinct ids, and each row's index among them
        ids = pc.unique(column)
        ids = ids.take(pc.sort_indices(ids))
        return ids, pc.index_in(column, value_set=ids).cast(pa.int32())

    (users, u), (items, i) = factorise(kept["user"]), factorise(kept["item"])
    # One thread: pairs in first-seen order, so a run is reproducible (Spark's sums too).
    pairs = (pa.table({"user": u, "item": i, "w": kept["weight"]})
             .group_by(["user", "item"], use_threads=False).aggregate([("w", "sum")]))
    return users, items, pa.table({"user": pairs["user"], "item": pairs["item"],
                                   "rating": pairs["w_sum"].cast(pa.float32())})


def main():
    args = parse_args()
    check_dependencies()
    out = args.output
    partial = out.with_name(out.name + ".partial")
    try:
        if out.exists():
            raise Refused(f"{out} exists; the factors go to a new folder")
        params = hyper_parameters(args)
        layout, n_files, log = read_log(args.input)
        users, items, pairs = pairs_of(log)
        del log
    except Refused as e:
        die(2, str(e))
    print(f"{layout} layout, {n_files} file(s): {pairs.num_rows} pairs, {len(users)} users, "
          f"{len(items)} items")
    reg_param = args.reg_param
    if reg_param is None:
        positive = pc.sum(pc.greater(pairs["rating"], 0).cast(pa.int64())).as_py()
        per_user = max(positive / len(users), 1.0)
        reg_param = params["regularization"] / per_user
        print(f"reg_param {reg_param:.6g} = regularization {params['regularization']:g} / "
              f"{per_user:.2f} positive pairs per user (Spark's ALS-WR scaling)")

    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession

    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run
    with tempfile.TemporaryDirectory(prefix="spark_als-") as tmp:
        pq.write_table(pairs, f"{tmp}/pairs.parquet")
        spark = (SparkSession.builder.master(args.master).appName("shopdb-spark-als")
                 .config("spark.driver.memory", args.driver_memory)
                 .config("spark.ui.enabled", "false")
                 .config("spark.ui.showConsoleProgress", "false").getOrCreate())
        try:
            spark.sparkContext.setLogLevel("ERROR")
            # Lets ALS checkpoint every 10 iterations (its default), bounding the lineage.
            spark.sparkContext.setCheckpointDir(f"{tmp}/checkpoints")
            ratings = spark.read.parquet(f"{tmp}/pairs.parquet").cache()
            ratings.count()  # read and cached before the clock starts
            als = ALS(implicitPrefs=True, rank=params["factors"], maxIter=params["iterations"],
                      regParam=reg_param, alpha=params["alpha"], seed=args.seed,
                      userCol="user", itemCol="item", ratingCol="rating")
            started = time.perf_counter()
            model = als.fit(ratings)  # eager: the factors are computed and cached here
            fit_seconds = time.perf_counter() - started
            partial.mkdir(parents=True)
            for name, ids, factors in (("user", users, model.userFactors),
                                       ("item", items, model.itemFactors)):
                # Spark's ids are our dense ints: map them back to the application's.
                t = factors.toArrow().sort_by("id")
                if t.num_rows != len(ids):
                    raise RuntimeError(f"Spark gave {t.num_rows} {name} factors, not {len(ids)}")
                table = pa.table({"id": ids.take(t["id"]).cast(pa.string()),
                                  "features": t["features"].cast(pa.list_(pa.float32()))})
                pq.write_table(table, partial / f"{name}_factors.parquet", compression="snappy")
            partial.rename(out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            spark.stop()
    print(json.dumps({
        "pairs": pairs.num_rows, "users": len(users), "items": len(items),
        "factors": params["factors"], "reg_param": reg_param, "alpha": params["alpha"],
        "iterations": params["iterations"], "fit_seconds": round(fit_seconds, 3),
        "wall_seconds": round(time.perf_counter() - START, 3)}))


if __name__ == "__main__":
    main()
