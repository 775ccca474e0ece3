"""What a client can learn and leave behind: LIST and INFO descriptions name
the format, never the image's host path; an unknown export name full of
newlines and terminal escapes reaches blockd's log as one escaped line."""
import nbd

import nbdraw as N
from itest import served, check, main, MiB


def run():
    args = ["--export", "a=@TMP@/a.img", "--export", "b=@TMP@/b.img,readonly"]
    with served(*args, disk=None, extra_files=[("a.img", MiB), ("b.img", MiB)]) as (b, _):
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.connect_unix(b.sock)
        descs = {}
        h.opt_list(lambda name, desc: descs.__setitem__(name, desc) or 0)
        for name in ("a", "b"):
            h.set_export_name(name)
            h.set_full_info(True)
            h.opt_info()
            descs[name + " (INFO)"] = h.get_export_description()
        h.opt_abort()
        print("descriptions: %r" % descs)
        for name, desc in descs.items():
            check(b.tmp not in desc and "/" not in desc and ".img" not in desc,
                  "%s: description %r names a host path" % (name, desc))
        check("raw" in descs["a"] and "read-only" in descs["b"], "descriptions: %r" % descs)

        evil = "x\nblockd: export 'a': FORGED\x1b[31m'\\"
        c = N.Client(b.sock).handshake(name="a")
        c.disconnect()
        try:
            N.Client(b.sock).handshake(name=evil)
        except (N.OptionError, N.Closed):
            pass
        log = b.logtext()
        check("FORGED" in log, "no log line for the unknown export: " + log)
        line = [l for l in log.splitlines() if "FORGED" in l]
        check(len(line) == 1 and line[0].startswith("blockd: client asked for unknown export"),
              "a client forged a log line: %r" % log)
        check("\x1b" not in log, "a terminal escape reached the log")
        print("logged as: " + line[0])
        b.stop()


main(run)
