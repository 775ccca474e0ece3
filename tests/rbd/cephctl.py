"""Monitor commands for the test cluster (cephlib.sh), through one librados
connection per call instead of one `ceph` CLI run (1-2 s each) per command.

  cephctl.py osd-new UUID    registers an OSD, prints its id
  cephctl.py pool NAME       creates pool NAME for RBD and waits until it takes writes

Reads the cluster from $CEPH_CONF. Exits 1 with one line on failure.
"""
import json
import os
import sys

import rados


def command(cluster, **cmd):
    """Runs one monitor command; returns its output, or exits with its error."""
    ret, out, err = cluster.mon_command(json.dumps(cmd), b"", timeout=20)
    if ret != 0:
        sys.exit("cephctl: %s: %s (%d)" % (cmd["prefix"], err, ret))
    return out


def main():
    cluster = rados.Rados(conffile=os.environ["CEPH_CONF"],
                          conf={"rados_osd_op_timeout": "20", "rados_mon_op_timeout": "20"})
    # Waits for the monitor to answer (client mount timeout), so no polling.
    cluster.connect(timeout=20)
    try:
        if sys.argv[1] == "osd-new":
            print(command(cluster, prefix="osd new", uuid=sys.argv[2]).decode().strip())
        elif sys.argv[1] == "pool":
            name = sys.argv[2]
            command(cluster, prefix="osd pool create", pool=name, pg_num=8, pgp_num=8)
            command(cluster, prefix="osd pool application enable", pool=name, app="rbd")
            # The first write waits until the OSD is up and the PGs are active.
            with cluster.open_ioctx(name) as io:
                io.write_full("cephctl-probe", b"x")
                io.remove_object("cephctl-probe")
        else:
            sys.exit("cephctl: unknown command " + sys.argv[1])
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
