#!/usr/bin/python3
"""blockd follows proto.md's negotiation rules that libnbd hides from tests:

- NBD_FLAG_SEND_DF only when structured replies were negotiated;
- FUA accepted on every command of a writable export (the flag is
  advertised), refused on a read-only one;
- NBD_OPT_SET_META_CONTEXT replaces the earlier contexts even when it fails,
  so a failed SET leaves no base:allocation behind;
- NBD_OPT_LIST_META_CONTEXT answers with context id 0.
"""
import struct

from itest import main, served, expect_error, check
import nbdraw as R


def run():
    with served() as (b, path):
        # DF: not without structured replies, yes with them.
        c = R.Client(b.sock).handshake(structured=False)
        check(not c.eflags & R.FLAG_SEND_DF, "DF advertised without structured replies")
        c.disconnect()
        c = R.Client(b.sock).handshake(structured=True)
        check(c.eflags & R.FLAG_SEND_DF, "DF not advertised with structured replies")

        # FUA on commands other than writes: accepted, and the connection lives.
        for cmd, off, count in ((R.CMD_READ, 0, 4096), (R.CMD_FLUSH, 0, 0),
                                (R.CMD_CACHE, 0, 4096),
                                (R.CMD_WRITE_ZEROES, 0, 4096), (R.CMD_TRIM, 0, 4096)):
            r = c.request(cmd, off, count, flags=R.CMD_FLAG_FUA)
            expect_error("FUA on command %d" % cmd, r.error, 0)
        check(c.read(0, 512).error == 0, "connection broken after FUA requests")
        c.disconnect()

        # SET_META_CONTEXT that fails still clears the earlier one.
        c = R.Client(b.sock)
        c.greeting()
        c.opt_structured_reply()
        c.opt_meta_context("", ["base:allocation"])
        bad = struct.pack(">I", 4) + b"abc"  # name length past the payload
        try:
            c.option(R.OPT_SET_META_CONTEXT, bad)
            check(False, "a malformed SET_META_CONTEXT was accepted")
        except R.OptionError as e:
            check(e.reply == R.REP_ERR_INVALID, "malformed SET_META_CONTEXT: reply %#x" % e.reply)
        c.opt_go("")
        r = c.request(R.CMD_BLOCK_STATUS, 0, 4096)
        expect_error("block status after a failed SET_META_CONTEXT", r.error, R.EINVAL)
        c.disconnect()

        # LIST_META_CONTEXT: base:allocation with id 0.
        c = R.Client(b.sock)
        c.greeting()
        c.opt_structured_reply()
        payload = struct.pack(">II", 0, 0)  # export "", no queries: all contexts
        got = [(rep, p) for rep, p in c.option(R.OPT_LIST_META_CONTEXT, payload)]
        metas = [p for rep, p in got if rep == R.REP_META_CONTEXT]
        check(metas, "LIST_META_CONTEXT gave no context")
        ctx_id, name = struct.unpack(">I", metas[0][:4])[0], metas[0][4:]
        check(name == b"base:allocation", "LIST_META_CONTEXT named %r" % name)
        check(ctx_id == 0, "LIST_META_CONTEXT gave id %d, proto.md says 0" % ctx_id)
        c.close()

    # Read-only export: FUA is not advertised, so it is refused on reads,
    # and writes get EPERM whatever their flags.
    with served("--readonly") as (b, path):
        c = R.Client(b.sock).handshake(structured=True)
        check(not c.eflags & R.FLAG_SEND_FUA, "FUA advertised on a read-only export")
        expect_error("FUA read on read-only", c.read(0, 512, flags=R.CMD_FLAG_FUA).error, R.EINVAL)
        expect_error("FUA write on read-only",
                     c.write(0, b"x" * 512, flags=R.CMD_FLAG_FUA).error, R.EPERM)
        check(c.read(0, 512).error == 0, "connection broken after refused requests")
        c.disconnect()


main(run)
