#!/usr/bin/python3
"""bench-report: the runner's arithmetic without any server: fio JSON parsing
(sums over directions and jobs, a banner before the JSON, errors), medians
over rounds, ratios to the baseline, and the Markdown tables."""
import os
import sys
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fio import JOBS, fio_figures  # noqa: E402
from report import add_ratios, markdown_table, median, median_result  # noqa: E402


def ddir(iops=0.0, bw=0, ios=0, lat_mean=0.0, p99=0.0):
    """One data direction of fio's JSON."""
    return {"iops": iops, "bw_bytes": bw, "total_ios": ios,
            "lat_ns": {"mean": lat_mean, "N": ios},
            "clat_ns": {"percentile": {"99.000000": p99}}}


def fio_json(jobs):
    """fio's JSON document around JOBS, as text with a banner line first."""
    import json
    return "fio: connected to NBD server\n" + json.dumps({"jobs": jobs})


class FioFigures(unittest.TestCase):
    def test_sums_directions_and_jobs(self):
        job = {"error": 0, "usr_cpu": 10.0, "sys_cpu": 5.0,
               "read": ddir(1000.0, 4096000, 5000, 2000.0, 4000.0),
               "write": ddir(500.0, 2048000, 2500, 4000.0, 8000.0), "trim": ddir()}
        r = fio_figures(fio_json([job, job]))
        self.assertAlmostEqual(r["iops"], 3000.0)
        self.assertAlmostEqual(r["mbps"], 2 * (4.096 + 2.048))
        self.assertEqual(r["total_ios"], 15000)
        # Mean latency weighted by I/O count: (5000*2 + 2500*4) / 7500 us.
        self.assertAlmostEqual(r["lat_mean_us"], (5000 * 2.0 + 2500 * 4.0) / 7500)
        self.assertAlmostEqual(r["clat_p99_us"], 8.0)
        self.assertNotIn("error", r)

    def test_job_error_is_reported(self):
        job = {"error": 5, "read": ddir(), "write": ddir(), "trim": ddir()}
        self.assertEqual(fio_figures(fio_json([job]))["error"], "fio job error 5")

    def test_no_json_raises(self):
        with self.assertRaises(ValueError):
            fio_figures("fio: nbd_connect_uri: connect: No such file or directory\n")


class Folding(unittest.TestCase):
    def test_median(self):
        self.assertEqual(median([3, 1, 2]), 2)
        self.assertEqual(median([4, 1, 2, 3]), 2.5)
        self.assertEqual(median([None, 5]), 5)
        self.assertIsNone(median([None]))

    def test_median_result_keeps_runs_and_errors(self):
        runs = [{"job": "j", "server": "s", "iops": i, "mbps": i, "total_ios": 10,
                 "server_cpu_s": 1.0} for i in (30.0, 10.0, 20.0)]
        runs[1]["error"] = "boom"
        r = median_result(runs)
        self.assertEqual(r["iops"], 20.0)
        self.assertEqual(r["total_ios"], 30)
        self.assertEqual(r["server_cpu_s"], 3.0)
        self.assertEqual(r["error"], "boom")
        self.assertEqual(len(r["runs"]), 3)

    def test_ratios_to_baseline(self):
        results = [{"job": "j", "server": "blockd", "iops": 100.0, "mbps": 1.0,
                    "server_cpu_s_per_mio": 10.0},
                   {"job": "j", "server": "nbdkit-file", "iops": 50.0, "mbps": 2.0,
                    "server_cpu_s_per_mio": 25.0},
                   {"job": "k", "server": "nbdkit-file", "iops": 1.0, "mbps": 1.0}]
        add_ratios(results, "blockd")
        self.assertEqual(results[0]["ratio"]["iops"], 1.0)
        self.assertEqual(results[1]["ratio"], {"iops": 0.5, "mbps": 2.0,
                                               "server_cpu_s_per_mio": 2.5})
        self.assertNotIn("ratio", results[2])   # no baseline for job k

    def test_markdown_table(self):
        results = [{"job": JOBS[0].name, "server": "blockd", "iops": 20000.0, "mbps": 82.0,
                    "server_cpu_s_per_mio": 8.0},
                   {"job": JOBS[0].name, "server": "qsd", "iops": 10000.0, "mbps": 41.0,
                    "server_cpu_s_per_mio": 16.0}]
        add_ratios(results, "blockd")
        doc = {"meta": {"baseline": "blockd"}, "jobs": [vars(JOBS[0])],
               "servers": {"blockd": {"peak_rss_kib": 10240}, "qsd": {"peak_rss_kib": 20480}},
               "results": results}
        text = markdown_table(doc)
        self.assertIn("| %s | 20.0k | 10.0k (0.50x) |" % JOBS[0].name, text)
        self.assertIn("| %s | 8.00 | 16.0 (2.00x) |" % JOBS[0].name, text)
        self.assertIn("| peak RSS (MiB) | 10.0 | 20.0 (2.00x) |", text)
        self.assertNotIn("OSD", text)

    def test_markdown_table_rbd(self):
        # --rbd: the cluster's figures get tables of their own; a CPU share
        # has no ratio.
        results = [{"job": JOBS[0].name, "server": "qsd-rbd", "iops": 2000.0, "mbps": 8.2,
                    "server_cpu_s_per_mio": 300.0, "server_cpu_pct": 60.0,
                    "osd_cpu_s_per_mio": 200.0, "osd_cpu_pct": 40.0, "mon_cpu_s_per_mio": 0.0},
                   {"job": JOBS[0].name, "server": "blockd-rbd", "iops": 4000.0, "mbps": 16.4,
                    "server_cpu_s_per_mio": 75.0, "server_cpu_pct": 30.0,
                    "osd_cpu_s_per_mio": 100.0, "osd_cpu_pct": 40.0, "mon_cpu_s_per_mio": 0.0}]
        add_ratios(results, "qsd-rbd")
        doc = {"meta": {"baseline": "qsd-rbd"}, "jobs": [vars(JOBS[0])],
               "servers": {"qsd-rbd": {}, "blockd-rbd": {}}, "results": results}
        text = markdown_table(doc)
        self.assertIn("| %s | 300 | 75.0 (0.25x) |" % JOBS[0].name, text)
        self.assertIn("OSD CPU s per million I/Os, ratio to qsd-rbd in brackets:", text)
        self.assertIn("| %s | 200 | 100 (0.50x) |" % JOBS[0].name, text)
        self.assertIn("OSD CPU, % of one core:\n", text)
        self.assertIn("| %s | 40.0 | 40.0 |" % JOBS[0].name, text)


if __name__ == "__main__":
    unittest.main()
