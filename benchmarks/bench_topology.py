"""Run a reduced slice of the ``topology`` preset into a store that the full preset resumes.

The slice keeps the preset's seed, generators, tasks and training, and only drops budgets,
cell types and tasks, so its runs are runs of the preset itself (same run ids, same
graphs): ``graphprior bench run --preset topology --store STORE`` later trains the rest and
skips what is stored. Prints the runs, the measured CPU seconds per run and the estimate
for the whole preset at that rate.

    nice -n 5 .venv/bin/python benchmarks/bench_topology.py --store /tmp/h18/topology.db \\
        --budget 120 --cells rnn_tanh,gru --tasks classify --repetitions 2 --workers 2
"""

from __future__ import annotations

import argparse
from typing import Any

from graphprior.spec import expand, load_preset, validate_spec
from graphprior.store import read_table
from graphprior.sweep import run_sweep


def _keeps_budget(params: dict[str, Any], budget: int) -> dict[str, Any] | None:
    """The generator's parameters at one budget (list values cut to the budget's), None when
    none of its budget values is ``budget``."""
    out = dict(params)
    for key in ("budget", "m", "k", "d"):
        value = params.get(key)
        if value is None:
            continue
        # n = 30: k and d are mean degrees (n * k / 2 edges), m and budget are edge counts
        edges = {v: v * 30 / 2 if key in ("k", "d") else v for v in (value if isinstance(value, list) else [value])}
        kept = [v for v, e in edges.items() if e == budget]
        if not kept:
            return None
        out[key] = kept[0]
    return out


def reduced_spec(budget: int, cells: list[str], tasks: list[str], seeds: list[int] | None = None,
                 repetitions: int | None = None) -> dict[str, Any]:
    """The preset cut to one edge budget, some cells, task kinds, training seeds and draws per
    parameter point (the first ``repetitions`` of the preset's)."""
    data = load_preset("topology").to_toml_dict()
    if seeds is not None:
        data["seeds"] = seeds
    if repetitions is not None:
        data["repetitions"] = min(repetitions, data["repetitions"])
    generators = []
    for generator in data["generators"]:
        params = _keeps_budget(generator["params"], budget)
        if params is not None:
            generators.append({**generator, "params": params})
    data["generators"] = generators
    data["model"]["cells"] = cells
    data["tasks"] = [t for t in data["tasks"] if t["kind"] in tasks]
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--budget", type=int, default=120)
    parser.add_argument("--cells", default="rnn_tanh,gru")
    parser.add_argument("--tasks", default="classify")
    parser.add_argument("--seeds", default=None, help="comma-separated training seeds [default: the preset's]")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="draws per parameter point [default: the preset's]")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    cells, tasks = args.cells.split(","), args.tasks.split(",")
    spec = validate_spec(reduced_spec(args.budget, cells, tasks, seeds, args.repetitions))
    runs = expand(spec)
    full = {run.run_id for run in expand(load_preset("topology"))}
    assert {run.run_id for run in runs} <= full, "the slice must be runs of the preset"
    summary = run_sweep(spec, args.store, workers=args.workers, group_size=1)
    table = read_table(args.store)
    done = table[table["status"] == "done"]
    per_run = float(done["cpu_seconds"].mean())
    print(f"slice: {len(runs)} runs ({summary.done} trained now, {summary.skipped} stored), "
          f"{done['graph_id'].nunique()} graphs; wall {summary.seconds:.0f} s")
    by_cell = done.groupby("cell")["cpu_seconds"].mean().round(2).to_dict()
    print(f"CPU seconds per run: mean {per_run:.2f}, by cell {by_cell}")
    print(f"whole preset at this slice's rate: {len(full)} runs x {per_run:.2f} s = "
          f"{len(full) * per_run / 3600:.2f} CPU-hours = {len(full) * per_run / 7200:.2f} h on 2 cores "
          "(the slice's cells and tasks only: the preset's header has the rate per cell and task)")


if __name__ == "__main__":
    main()
