"""Write a SLURM sweep file from a grid of Hydra overrides (one run per line), and submit it as a job
array of slurm/array.sbatch.

    python scripts/sweep.py --name eta experiment=cpu_digits_cnn method=norm_test \\
        batch_size.eta=0.25,0.5,1.0 seed=0,1,2 --submit

expands the grid exactly as `python src/train.py -m ...` would (comma lists, range(), ...), writes
slurm/sweeps/eta.txt (9 lines) and runs `sbatch --array=0-8%<parallel> slurm/array.sbatch slurm/sweeps/eta.txt`,
each run landing in runs/sweeps/eta/<line number - 1>/. Resources: --sbatch-arg (repeatable), e.g.
--sbatch-arg=--partition=gpu --sbatch-arg=--gpus=1 --sbatch-arg=--time=12:00:00.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

ROOT = Path(__file__).resolve().parent.parent


def expand(grid: list[str]) -> list[list[str]]:
    """Every run of a Hydra sweep: the lists of overrides, in Hydra's order."""
    overrides = OverridesParser.create().parse_overrides(grid)
    return BasicSweeper.split_arguments(overrides, max_batch_size=None)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", nargs="+", help="Hydra overrides; comma lists and range() make the grid")
    parser.add_argument("--name", required=True, help="the sweep's name: slurm/sweeps/<name>.txt, runs/sweeps/<name>/")
    parser.add_argument("--sweeps", type=Path, default=ROOT / "slurm" / "sweeps", help="where sweep files go")
    parser.add_argument("--runs", type=Path, default=None, help="run directories (default: runs/sweeps/<name>)")
    parser.add_argument("--submit", action="store_true", help="submit the sweep with sbatch")
    parser.add_argument("--parallel", type=int, default=16, help="array tasks running at once")
    parser.add_argument("--sbatch-arg", action="append", default=[], help="an sbatch option, e.g. --sbatch-arg=--time=2:00:00")
    args = parser.parse_args()

    try:
        runs = expand(args.grid)
    except Exception as error:  # Hydra's override grammar errors
        print(f"error: bad override in {args.grid}: {error}".splitlines()[0], file=sys.stderr)
        return 2
    sweep_file = args.sweeps / f"{args.name}.txt"
    sweep_file.parent.mkdir(parents=True, exist_ok=True)
    sweep_file.write_text("".join(" ".join(run) + "\n" for run in runs))
    print(f"{sweep_file}: {len(runs)} runs")
    if not args.submit:
        return 0
    run_dirs = (args.runs or ROOT / "runs" / "sweeps" / args.name).resolve()
    command = ["sbatch", "--parsable", f"--array=0-{len(runs) - 1}%{args.parallel}", *args.sbatch_arg,
               str(ROOT / "slurm" / "array.sbatch"), str(sweep_file.resolve())]
    env = {**os.environ, "SWEEP_DIR": str(run_dirs)}
    job = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if job.returncode != 0:
        print(f"error: sbatch failed: {job.stderr.strip()}", file=sys.stderr)
        return job.returncode
    print(f"submitted job array {job.stdout.strip()}: runs in {run_dirs}/<task>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
