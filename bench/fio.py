"""The fio side: the workloads, their command lines, and the figures taken
from fio's JSON output."""
import json
import shutil
import subprocess


class Job:
    """One fio workload: a name and the fio options that define it."""

    def __init__(self, name, rw, bs, iodepth, numjobs=1, title="", refill=False):
        self.name = name          # short name used in tables and JSON
        self.rw = rw              # fio rw= (randread, write, trim, ...)
        self.bs = bs              # fio bs=
        self.iodepth = iodepth    # fio iodepth= per connection
        self.numjobs = numjobs    # fio numjobs=: one NBD connection each
        self.title = title        # human description for the table
        self.refill = refill      # refill the test file before each run, and
                                  # stop after one pass over it (see options)

    def options(self, runtime):
        """Returns the fio options shared by every mode (no engine, no target)."""
        # A refilled job (trim) must never come back over ground it already
        # covered: at 10k trims/s a time-based run would wrap a 1 GiB file
        # several times, and punch mostly holes. Without time_based, fio
        # stops at the end of the file or at the runtime, whichever first.
        timing = [] if self.refill else ["--time_based"]
        return ["--name=" + self.name, "--rw=" + self.rw, "--bs=" + self.bs,
                "--iodepth=%d" % self.iodepth, "--numjobs=%d" % self.numjobs,
                "--group_reporting", *timing, "--runtime=%dms" % round(runtime * 1000),
                "--norandommap", "--output-format=json"]


# Reads first (on the filled file), then writes, trim last: a trim leaves
# holes that would turn later reads into hole reads.
JOBS = [
    Job("randread-4k", "randread", "4k", 32, title="4k random read, QD32"),
    Job("randread-4k-2conn", "randread", "4k", 32, numjobs=2,
        title="4k random read, 2 connections x QD32"),
    Job("seqread-1m", "read", "1m", 8, title="1 MiB sequential read, QD8"),
    Job("randwrite-4k", "randwrite", "4k", 32, title="4k random write, QD32"),
    Job("seqwrite-1m", "write", "1m", 8, title="1 MiB sequential write, QD8"),
    Job("trim-64k", "trim", "64k", 8, title="64 KiB sequential trim, QD8", refill=True),
]


def fio_has_nbd():
    """Returns True if fio is installed and built with the nbd engine."""
    if not shutil.which("fio"):
        return False
    r = subprocess.run(["fio", "--enghelp=nbd"], capture_output=True, text=True)
    return r.returncode == 0 and "uri" in r.stdout


def fio_version():
    """Returns fio's version string."""
    try:
        return subprocess.run(["fio", "--version"], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return ""


def fio_nbd_argv(job, uri, runtime, outpath):
    """Returns the fio command line for JOB against the NBD server at URI."""
    return ["fio", *job.options(runtime), "--ioengine=nbd", "--uri=" + uri,
            "--output=" + outpath]


def fio_figures(text):
    """Parses fio's JSON output into IOPS, MB/s, total I/Os, latency and fio's
    own CPU, summed over data directions and jobs.  Raises ValueError."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON in fio output")
    data = json.loads(text[start:])     # skip any banner before the JSON
    res = {"iops": 0.0, "mbps": 0.0, "total_ios": 0}
    lat_sum, lat_n, p99 = 0.0, 0, 0.0
    for j in data["jobs"]:
        if j.get("error"):
            res["error"] = "fio job error %d" % j["error"]
        res["fio_usr_cpu"] = j.get("usr_cpu")
        res["fio_sys_cpu"] = j.get("sys_cpu")
        for ddir in ("read", "write", "trim"):
            d = j.get(ddir)
            if not d or not d.get("total_ios"):
                continue
            res["iops"] += d["iops"]
            res["mbps"] += d["bw_bytes"] / 1e6
            res["total_ios"] += d["total_ios"]
            lat = d.get("lat_ns", {})
            if lat.get("N"):
                lat_sum += lat["mean"] * lat["N"]
                lat_n += lat["N"]
            pct = d.get("clat_ns", {}).get("percentile", {})
            p99 = max(p99, pct.get("99.000000", 0.0))
    res["lat_mean_us"] = lat_sum / lat_n / 1000 if lat_n else None
    res["clat_p99_us"] = p99 / 1000 if p99 else None
    return res
