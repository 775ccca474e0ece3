"""Many connections share the plugin's one image handle: requests in flight on
four connections at once land where they should, a flush on one connection
covers writes made on the others (what CAN_MULTI_CONN promises), and reads on
any connection see them.  Runs on raw, and on an overlay when one can be made."""
import os
import subprocess
import tempfile

from plugin_server import PluginServer, plugin_formats

import nbd

from testlib import check, sparse_file

MiB = 1 << 20
CONNS = 4
CHUNK = 256 * 1024


def chunk(i):
    """The contents of chunk I: recognisable, different per chunk."""
    return bytes([i % 251 + 1]) * CHUNK


def run(image, what, tmp, size):
    nchunks = size // CHUNK
    with PluginServer(image, tmp=tmp) as srv:
        hs = [srv.connect() for _ in range(CONNS)]
        check(all(h.can_multi_conn() for h in hs), "%s: multi-conn not advertised" % what)
        # Every connection gets many writes in flight before any is reaped;
        # nbdkit's parallel thread model runs them concurrently.
        for i in range(nchunks):
            flags = nbd.CMD_FLAG_FUA if i % 7 == 0 else 0
            hs[i % CONNS].aio_pwrite(nbd.Buffer.from_bytearray(bytearray(chunk(i))),
                                     i * CHUNK, flags=flags)
        for h in hs:
            while h.aio_in_flight() > 0:
                h.poll(-1)
        # One flush, on a connection that did not make most of the writes.
        hs[CONNS - 1].flush()
        for i in range(nchunks):
            got = hs[(i + 1) % CONNS].pread(CHUNK, i * CHUNK)
            check(got == chunk(i), "%s: chunk %d read back wrong on another connection" % (what, i))
        # Cache (prefetch) and a one-extent block status answer on any connection.
        hs[0].cache(4 * MiB, 0)
        seen = []
        hs[1].block_status(size, 0, lambda m, o, e, err: seen.append(len(e)) or 0,
                           nbd.CMD_FLAG_REQ_ONE)
        check(seen == [2], "%s: REQ_ONE block status gave %s" % (what, seen))
        for h in hs:
            h.shutdown()
        srv.stop()
    print("ok:", what, "%d chunks over %d connections" % (nchunks, CONNS))


with tempfile.TemporaryDirectory(prefix="nbdkit-test.") as tmp:
    img = sparse_file(os.path.join(tmp, "disk.img"), 16 * MiB)
    run(img, "raw", tmp, 16 * MiB)
    with open(img, "rb") as f:
        data = f.read()
    check(all(data[i * CHUNK:(i + 1) * CHUNK] == chunk(i) for i in range(16 * MiB // CHUNK)),
          "raw file contents differ after the server stopped")

    tool = os.environ.get("BLOCKD_IMG", "")
    if "overlay" in plugin_formats() and tool and os.path.exists(tool):
        base = os.path.join(tmp, "base.img")
        with open(base, "wb") as f:
            f.write(b"Z" * (8 * MiB))
        ovl = os.path.join(tmp, "disk.ovl")
        subprocess.run([tool, "create", "-b", base, ovl], check=True)
        run(ovl, "overlay", tmp, 8 * MiB)
    else:
        print("overlay part not run: no overlay format or blockd-img")
print("PASS")
