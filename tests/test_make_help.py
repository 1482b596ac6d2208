"""`make help`: every target with a `## ` comment, one line each (the comment's first line)."""
import re
import subprocess

from helpers import ROOT


def test_make_help_lists_each_commented_target_in_one_line():
    lines = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    makefile = (ROOT / "Makefile").read_text()
    commented = re.findall(r"^## (.*)\n(?:(?:##|[A-Z_]+ [?:]?=|\.PHONY).*\n)*([a-z][\w-]*):(?!=)", makefile, re.M)
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert len(lines) == len(listed) == len(commented) >= 15
    assert {target: first_line for first_line, target in commented} == listed
    assert {"run", "test", "help", "reproduce-cpu", "figures"} <= set(listed)
