#!/usr/bin/python3
"""Prints a bench/run.py --json file as the Markdown tables of bench/README.md.
Usage: bench/table.py RESULTS.json"""
import json
import sys

sys.dont_write_bytecode = True
from report import markdown_table  # noqa: E402


def main(argv):
    """Prints the tables; returns the exit status."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    with open(argv[0]) as f:
        doc = json.load(f)
    m = doc["meta"]
    print("%s, %s mode, %s, kernel %s, %d CPUs (%s), %s, file %d MiB, %g s per job x %d rounds "
          "(median), load average at the end %s.\n" % (
              m["date"], m.get("mode", "host"), m["fio"], m["kernel"], m["cpus"], m["cpu_model"],
              m["filesystem"], m["file_size"] >> 20, m["runtime_s"], m.get("repeat", 1),
              " ".join(m.get("loadavg_at_end", []))))
    print(markdown_table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
