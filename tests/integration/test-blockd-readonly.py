"""blockd: a read-only export (--readonly, or ,readonly on one --export)
advertises READ_ONLY, serves reads, and answers every write, trim and write
zeroes with EPERM (libnbd with strict mode off, so the server decides); the
file is never modified, and a read-write export beside it still works."""
import errno
import hashlib
import os
import shutil
import sys
import tempfile

import nbd

import nbdraw as N
from itest import Blockd, check, main, MiB


def check_readonly(b, name, path, want):
    """Export NAME of blockd B is read-only and PATH keeps WANT."""
    h = b.connect(name)
    check(h.is_read_only(), "export %r: is_read_only false" % name)
    check(h.pread(4096, 0) == want[:4096], "export %r: wrong data" % name)
    h.set_strict_mode(0)
    for what, fn in (("write", lambda: h.pwrite(b"\xff" * 4096, 0)),
                     ("write FUA", lambda: h.pwrite(b"\xff" * 512, 4096, nbd.CMD_FLAG_FUA)),
                     ("trim", lambda: h.trim(4096, 0)),
                     ("zero", lambda: h.zero(4096, 0)),
                     ("zero NO_HOLE", lambda: h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE))):
        try:
            fn()
            raise AssertionError("export %r: %s succeeded" % (name, what))
        except nbd.Error as e:
            check(e.errnum == errno.EPERM,
                  "export %r: %s: %s (errno %s), expected EPERM" % (name, what, e.string, e.errnum))
    check(h.pread(4096, 0) == want[:4096], "export %r: data changed" % name)
    if h.can_flush():
        h.flush()   # harmless on a read-only export, if advertised
    h.shutdown()

    # Raw, on both reply kinds: EPERM, and the connection lives on.
    for structured in (False, True):
        c = N.Client(b.sock).handshake(name, structured=structured)
        check(c.eflags & N.FLAG_READ_ONLY, "raw: READ_ONLY not set")
        for cmd in (N.CMD_WRITE, N.CMD_TRIM, N.CMD_WRITE_ZEROES):
            r = c.request(cmd, 0, 4096, data=b"\xee" * 4096 if cmd == N.CMD_WRITE else None)
            check(r.error == N.EPERM, "raw %s cmd %d: %s" % (
                "structured" if structured else "simple", cmd, N.errname(r.error)))
            r = c.read(0, 4096)
            check(r.error == 0 and r.data == want[:4096], "raw: read after EPERM: %r" % r)
        c.disconnect()
    with open(path, "rb") as f:
        check(f.read() == want, "export %r: the file was modified" % name)


def run():
    """--readonly, then ,readonly beside a writable export."""
    content = hashlib.sha256(b"ro").digest() * (MiB // 32)
    tmp = tempfile.mkdtemp(prefix="blockd-test.")
    try:
        ro = os.path.join(tmp, "ro.img")
        rw = os.path.join(tmp, "rw.img")
        for p in (ro, rw):
            with open(p, "wb") as f:
                f.write(content)
        # --readonly: every export read-only.
        os.mkdir(os.path.join(tmp, "1"))
        os.mkdir(os.path.join(tmp, "2"))
        with Blockd("--readonly", ro, tmp=os.path.join(tmp, "1")) as b:
            try:
                check_readonly(b, "", ro, content)
                b.stop()
            except BaseException:
                print("---- blockd log ----\n" + b.logtext(), file=sys.stderr)
                raise
        # ,readonly on one export, a read-write one beside it.
        with Blockd("--export", "ro=%s,readonly" % ro, "--export", "rw=%s" % rw,
                    tmp=os.path.join(tmp, "2")) as b:
            try:
                check_readonly(b, "ro", ro, content)
                h = b.connect("rw")
                check(not h.is_read_only(), "export rw: is_read_only true")
                h.pwrite(b"\x42" * 4096, 0)
                h.flush()
                h.shutdown()
                b.stop()
            except BaseException:
                print("---- blockd log ----\n" + b.logtext(), file=sys.stderr)
                raise
        with open(rw, "rb") as f:
            check(f.read(4096) == b"\x42" * 4096, "export rw: write not in the file")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main(run)
