"""The project's measurements, outside the training package: what a tested step costs (`bench`, with
`anchors` and `summary`), where its time goes (`profiler`), every paper run's real steps at its true
shapes (`smoke_paper`, `smoke`), the first check on a GPU node (`gpu_check`), and the generated blocks
of README.md and docs/ (`docs`). Each tool is a module: `python -m adabatch_bench.bench --help`.
They read configs/ and write results/ of the checkout they run in: `ROOT`.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
