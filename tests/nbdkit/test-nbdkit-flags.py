"""What the plugin advertises, per image and mode: write, flush, trim, zero,
fast zero, FUA, cache, multi-conn, extents and block sizes."""
import os
import shutil
import subprocess
import tempfile

from plugin_server import PluginServer, plugin_formats

import nbd

from testlib import check, sparse_file


def flags(h):
    return {
        "read_only": h.is_read_only(), "flush": h.can_flush(), "fua": h.can_fua(),
        "trim": h.can_trim(), "zero": h.can_zero(), "fast_zero": h.can_fast_zero(),
        "cache": h.can_cache(), "multi_conn": h.can_multi_conn(),
        "extents": h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION),
    }


def expect(h, what, **want):
    got = flags(h)
    for k, v in want.items():
        check(got[k] == v, "%s: %s is %s, want %s (all: %s)" % (what, k, got[k], v, got))
    print("ok:", what, got)


def block_sizes(h):
    return tuple(h.get_block_size(s) for s in
                 (nbd.SIZE_MINIMUM, nbd.SIZE_PREFERRED, nbd.SIZE_MAXIMUM))


with tempfile.TemporaryDirectory(prefix="nbdkit-test.") as tmp:
    img = sparse_file(os.path.join(tmp, "disk.img"), 64 << 20)

    with PluginServer(img, tmp=tmp) as srv:
        h = srv.connect()
        expect(h, "raw", read_only=False, flush=True, fua=True, trim=True, zero=True,
               fast_zero=True, cache=True, multi_conn=True, extents=True)
        check(h.get_size() == 64 << 20, "size %d" % h.get_size())
        mn, pref, mx = block_sizes(h)
        check(mn >= 1 and mn <= pref <= mx, "block sizes %s" % ((mn, pref, mx),))
        print("ok: block sizes", (mn, pref, mx))
        h.shutdown()
        srv.stop()

    with PluginServer(img, "readonly=true", tmp=tmp) as srv:
        h = srv.connect()
        # Read-only is always multi-conn safe; trim and zero vanish with write.
        expect(h, "raw readonly=true", read_only=True, trim=False, zero=False,
               fast_zero=False, multi_conn=True, extents=True, cache=True)
        try:
            h.pwrite(b"x" * 512, 0)
            raise AssertionError("write to a read-only export succeeded")
        except nbd.Error as e:
            check(e.errno == "EPERM", "write on read-only gave %s" % e.errno)
        h.shutdown()
        srv.stop()

    if "qcow2" in plugin_formats() and shutil.which("qemu-img"):
        q = os.path.join(tmp, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", q, "8M"], check=True)
        # qcow2 is read-only even when the plugin is asked for writes.
        with PluginServer(q, "format=qcow2", tmp=tmp) as srv:
            h = srv.connect()
            expect(h, "qcow2", read_only=True, multi_conn=True)
            check(h.get_size() == 8 << 20, "qcow2 size %d" % h.get_size())
            h.shutdown()
            srv.stop()
print("PASS")
