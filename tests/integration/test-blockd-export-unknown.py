"""blockd with libnbd: connecting to an export that does not exist fails
(NBD_REP_ERR_UNKNOWN, which libnbd reports as ENOENT) without harming the
server; in option mode the client can list the exports and pick a real one."""
import errno

import nbd

from itest import served, check, main, MiB


def run():
    """Unknown names through libnbd, then option mode."""
    args = ["--export", "a=@TMP@/a.img", "--export", "b=@TMP@/b.img"]
    with served(*args, disk=None, extra_files=[("a.img", MiB), ("b.img", 2 * MiB)]) as (b, _):
        for name in ("nosuch", "", "A", "a/", "a" * 300):
            h = nbd.NBD()
            h.set_export_name(name)
            try:
                h.connect_unix(b.sock)
                raise AssertionError("connecting to export %r succeeded" % name)
            except nbd.Error as e:
                check(e.errnum == errno.ENOENT,
                      "export %r: %s (errno %s), expected ENOENT" % (name, e.string, e.errnum))
            del h

        h = nbd.NBD()
        h.set_opt_mode(True)
        h.connect_unix(b.sock)
        h.set_export_name("nosuch")
        try:
            h.opt_go()
            raise AssertionError("opt_go on nosuch succeeded")
        except nbd.Error as e:
            check(e.errnum == errno.ENOENT, "opt_go nosuch: %s" % e.string)
        names = []
        h.opt_list(lambda name, desc: names.append(name) or 0)
        check(sorted(names) == ["a", "b"], "opt_list: %r" % names)
        h.set_export_name("b")
        h.opt_go()
        check(h.get_size() == 2 * MiB, "export b: size %d" % h.get_size())
        h.pwrite(b"\x01" * 512, 0)
        h.shutdown()
        check(b.proc.poll() is None, "blockd died")
        b.stop()


main(run)
