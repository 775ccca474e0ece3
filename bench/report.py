"""Folding runs into results: medians over rounds, ratios to the baseline
server, the printed table, and the machine facts that go with them."""
import datetime
import os
import platform
import sys

# Figures folded by median over --repeat rounds (the rest are summed or kept).
MEDIAN_KEYS = ("iops", "mbps", "server_cpu_s_per_mio", "server_cpu_pct", "fio_usr_cpu",
               "fio_sys_cpu", "lat_mean_us", "clat_p99_us", "syscalls_per_io", "ctxsw_per_io",
               "osd_cpu_s_per_mio", "osd_cpu_pct", "mon_cpu_s_per_mio", "mon_cpu_pct")
# Figures given as a ratio to the baseline server's.
RATIO_KEYS = ("iops", "mbps", "server_cpu_s_per_mio", "osd_cpu_s_per_mio")


def median(values):
    """Returns the median of VALUES, ignoring None; None if there are none."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def median_result(runs):
    """Folds repeated runs of one job on one server into one result: each
    figure is the median over the runs, and the runs are kept under "runs"."""
    if len(runs) == 1:
        return runs[0]
    res = dict(runs[0])
    for k in MEDIAN_KEYS:
        if any(k in r for r in runs):
            res[k] = median(r.get(k) for r in runs)
    res["total_ios"] = sum(r["total_ios"] for r in runs)
    res["server_cpu_s"] = sum(r.get("server_cpu_s") or 0 for r in runs)
    errors = [r["error"] for r in runs if r.get("error")]
    if errors:
        res["error"] = errors[0]
    else:
        res.pop("error", None)
    res["runs"] = runs
    return res


def ratio(a, b):
    """Returns a/b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def add_ratios(results, baseline):
    """Adds to each result its figures as ratios to BASELINE's for the same job."""
    for r in results:
        base = next((b for b in results if b["job"] == r["job"] and b["server"] == baseline), None)
        if base is not None:
            # Only the figures this run has (the OSD's only with --rbd).
            r["ratio"] = {k: ratio(r.get(k), base.get(k)) for k in RATIO_KEYS
                          if k in r or k in base}


def fmt(v, unit=""):
    """Formats a figure compactly (97.1k, 2034, 0.52)."""
    if v is None:
        return "-"
    if unit == "k" and v >= 10000:
        return "%.1fk" % (v / 1000)
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmtx(v):
    """Formats a ratio as 1.23x."""
    return "-" if v is None else "%.2fx" % v


def print_table(jobs, results, servers, baseline, peak_rss, out=sys.stdout):
    """Prints the results table, job by job, with ratios to BASELINE."""
    w = max(len(s) for s in servers) + 2
    hdr = ("  %-*s %9s %7s %9s %7s %11s %7s %7s %7s" %
           (w, "server", "IOPS", "x", "MB/s", "x", "CPU s/MIO", "x", "srvCPU%", "fioCPU%"))
    # --rbd: the Ceph daemons, measured over the same fio runs.
    cluster = any(r.get("osd_cpu_s_per_mio") is not None for r in results)
    if cluster:
        hdr += " %10s %7s %6s %10s" % ("OSD s/MIO", "x", "OSD%", "mon s/MIO")
    print("ratios (x) are to %s from the same run" % baseline, file=out)
    for job in jobs:
        rows = [r for r in results if r["job"] == job.name]
        if not rows:
            continue
        print("%s (%s)" % (job.name, job.title), file=out)
        print(hdr, file=out)
        for r in rows:
            fiocpu = None
            if r.get("fio_usr_cpu") is not None:
                fiocpu = r["fio_usr_cpu"] + r["fio_sys_cpu"]
            rx = r.get("ratio", {})
            extra = ""
            if r.get("syscalls_per_io") is not None:
                extra = "   syscalls/IO %.2f  ctxsw/IO %.2f" % (
                    r["syscalls_per_io"], r.get("ctxsw_per_io") or 0)
            split = r.get("server_cpu_split_s")
            if split and split.get("io-wq"):
                extra += "  io-wq %.0f%% of CPU" % (
                    100.0 * split["io-wq"] / max(sum(split.values()), 1e-9))
            if cluster:
                extra = " %10s %7s %6s %10s%s" % (
                    fmt(r.get("osd_cpu_s_per_mio")), fmtx(rx.get("osd_cpu_s_per_mio")),
                    fmt(r.get("osd_cpu_pct")), fmt(r.get("mon_cpu_s_per_mio")), extra)
            print("  %-*s %9s %7s %9s %7s %11s %7s %7s %7s%s" % (
                w, r["server"], fmt(r["iops"], "k"), fmtx(rx.get("iops")),
                fmt(r["mbps"]), fmtx(rx.get("mbps")),
                fmt(r.get("server_cpu_s_per_mio")), fmtx(rx.get("server_cpu_s_per_mio")),
                fmt(r.get("server_cpu_pct")), fmt(fiocpu), extra), file=out)
        print(file=out)
    if any(peak_rss.get(s) for s in servers):
        print("peak RSS (VmHWM at the end of the run)", file=out)
        base = peak_rss.get(baseline)
        for s in servers:
            kib = peak_rss.get(s)
            print("  %-*s %9s MiB %7s" % (w, s, fmt(kib / 1024 if kib else None),
                                          fmtx(ratio(kib, base))), file=out)


def cpu_model():
    """Returns the CPU model name from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def fs_type(path):
    """Returns the file system type of the mount holding PATH."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, typ = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, "%s (%s on %s)" % (typ, dev, mnt)
    return kind


def machine_meta(datadir):
    """Returns the facts about this machine that every figure depends on."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "filesystem": fs_type(datadir),
        "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
    }


def markdown_table(doc):
    """Returns the results of a --json file as Markdown tables: IOPS, MB/s and
    server CPU s/MIO per job, each server a column, ratios to the baseline."""
    meta, results = doc["meta"], doc["results"]
    servers = list(doc["servers"])
    base = meta.get("baseline", servers[0])

    def cell(r, key, unit=""):
        if r is None or r.get(key) is None:
            return "-"
        if r["server"] == base or key not in RATIO_KEYS:
            return fmt(r[key], unit)
        return "%s (%s)" % (fmt(r[key], unit), fmtx((r.get("ratio") or {}).get(key)))

    out = []
    sections = [("IOPS", "iops", "k"), ("MB/s", "mbps", ""),
                ("server CPU s per million I/Os (lower is better)", "server_cpu_s_per_mio", "")]
    if any(r.get("osd_cpu_s_per_mio") is not None for r in results):
        # --rbd: what the single-node cluster spent on the same runs.
        sections += [("server CPU, % of one core", "server_cpu_pct", ""),
                      ("OSD CPU s per million I/Os", "osd_cpu_s_per_mio", ""),
                      ("OSD CPU, % of one core", "osd_cpu_pct", ""),
                      ("monitor CPU s per million I/Os", "mon_cpu_s_per_mio", "")]
    for title, key, unit in sections:
        if key in RATIO_KEYS:
            out.append("%s, ratio to %s in brackets:\n" % (title, base))
        else:
            out.append("%s:\n" % title)
        out.append("| job | " + " | ".join(servers) + " |")
        out.append("| --- |" + " ---: |" * len(servers))
        for job in doc["jobs"]:
            row = [next((r for r in results if r["job"] == job["name"] and r["server"] == s), None)
                   for s in servers]
            out.append("| %s | " % job["name"] + " | ".join(cell(r, key, unit) for r in row) + " |")
        out.append("")
    rss = [doc["servers"][s].get("peak_rss_kib") for s in servers]
    if any(rss):
        b = doc["servers"][base].get("peak_rss_kib")
        out.append("| | " + " | ".join(servers) + " |")
        out.append("| --- |" + " ---: |" * len(servers))
        out.append("| peak RSS (MiB) | " + " | ".join(
            "-" if k is None else fmt(k / 1024) + ("" if s == base else " (%s)" % fmtx(ratio(k, b)))
            for s, k in zip(servers, rss)) + " |")
        out.append("")
    return "\n".join(out)
