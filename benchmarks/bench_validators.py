"""What a validator costs in resident memory: pydantic against msgspec.

The daemon validates its config, profiles and wire messages with pydantic; most of the memory our
own modules add to the running process is pydantic's (its import, and each model's compiled
schema, validator and serializer). This measures what the same number of models, with the same
kinds of fields and constraints as ours (a name with a pattern, bounded integers and floats, a
literal, a tuple, an optional, forbidden extra keys, frozen instances), cost in each library: each
measurement is a fresh interpreter that imports numpy (as the daemon does), then the library
(``import_mb``), then defines ``--models`` models and validates one document with each in strict
mode (``models_mb``). RSS is ``VmRSS`` of ``/proc/self/status``.

Both are dependencies of edge-agent-runtime (msgspec for the wire models since this comparison,
pydantic for config files); the benchmark installs nothing and reports a library that is missing.

    python benchmarks/bench_validators.py [--models 63] [--repeats 3]

``--smoke``: 5 models, one run per library: the code path, for CI
(tests/integration/benchmarks/test_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

PROBE = r"""
import json, re, sys
def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
import numpy
base = rss()
lib, count = sys.argv[1], int(sys.argv[2])
from typing import Annotated, Literal
if lib == "pydantic":
    import pydantic
    from pydantic import BaseModel, ConfigDict, Field
    version = pydantic.VERSION
    after_import = rss()
    body = '''
class M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern="^[a-z_]+$")] = "x"
    count: Annotated[int, Field(ge=1, le=100000)] = 1
    hz: Annotated[float, Field(gt=0)] = 1.0
    kind: Literal["a", "b", "c"] = "a"
    tags: tuple[str, ...] = ()
    limit: int | None = None
'''
    ns = {"BaseModel": BaseModel, "ConfigDict": ConfigDict, "Field": Field,
          "Annotated": Annotated, "Literal": Literal}
    validate = lambda cls, doc: cls.model_validate(doc, strict=True)
else:
    import msgspec
    version = msgspec.__version__
    after_import = rss()
    body = '''
class M(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(pattern="^[a-z_]+$")] = "x"
    count: Annotated[int, msgspec.Meta(ge=1, le=100000)] = 1
    hz: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    kind: Literal["a", "b", "c"] = "a"
    tags: tuple[str, ...] = ()
    limit: int | None = None
'''
    ns = {"msgspec": msgspec, "Annotated": Annotated, "Literal": Literal}
    validate = lambda cls, doc: msgspec.convert(doc, cls, strict=True)
models = []
for _ in range(count):
    scope = dict(ns)
    exec(body, scope)
    models.append(scope["M"])
doc = {"name": "grid", "count": 3, "hz": 10.0, "kind": "b", "tags": ("x",), "limit": None}
for cls in models:
    validate(cls, doc)
print(json.dumps({"version": version, "import_mb": after_import - base,
                  "models_mb": rss() - after_import}))
"""


def measure(lib: str, models: int) -> dict[str, Any] | None:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, lib, str(models)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        if "ModuleNotFoundError" in res.stderr:
            return None
        raise RuntimeError(f"{lib} probe failed:\n{res.stderr}")
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=int, default=63, help="models per library (ours: 63)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="5 models, one run: for CI")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.repeats = 5, 1
    results: dict[str, dict[str, Any]] = {}
    for lib in ("pydantic", "msgspec"):
        runs = []
        for _ in range(args.repeats):
            run = measure(lib, args.models)
            if run is None:
                break
            runs.append(run)
        if not runs:
            print(
                json.dumps(
                    {
                        "bench": "validators",
                        "library": lib,
                        "error": f"not installed (pip install {lib})",
                    }
                )
            )
            continue
        rec: dict[str, Any] = {
            "bench": "validators",
            "library": lib,
            "version": runs[0]["version"],
            "models": args.models,
            "repeats": len(runs),
            "import_mb": round(statistics.median(r["import_mb"] for r in runs), 2),
            "models_mb": round(statistics.median(r["models_mb"] for r in runs), 2),
        }
        rec["total_mb"] = round(rec["import_mb"] + rec["models_mb"], 2)
        results[lib] = rec
        print(json.dumps(rec))
    if len(results) == 2:
        ratio = float(results["pydantic"]["total_mb"]) / float(results["msgspec"]["total_mb"])
        print(json.dumps({"bench": "validators", "pydantic_over_msgspec": round(ratio, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
