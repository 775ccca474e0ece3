"""blockd: malformed but well-framed requests get the exact NBD error and the
connection lives on: unknown command flags -> EINVAL, an unknown command ->
EINVAL, DF on a read over 64 KiB -> EOVERFLOW, FLUSH with a nonzero offset or
length -> EINVAL."""
import nbdraw as N
from itest import served, check, expect_error, main


def still_works(c, what):
    """A read after an error must still succeed."""
    r = c.read(0, 512)
    check(r.error == 0 and r.data == bytes(512), "read after %s failed: %r" % (what, r))


def run(structured):
    """Every flag error on a simple or structured connection."""
    mode = "structured" if structured else "simple"
    with served() as (b, disk):
        c = N.Client(b.sock).handshake(structured=structured)
        check(c.eflags & N.FLAG_SEND_FLUSH, "SEND_FLUSH not advertised")
        for bit in (1 << 5, 1 << 7, 1 << 15):
            for cmd, name in ((N.CMD_READ, "read"), (N.CMD_FLUSH, "flush"),
                              (N.CMD_TRIM, "trim")):
                what = "%s %s with unknown flag 0x%x" % (mode, name, bit)
                count = 0 if cmd == N.CMD_FLUSH else 512
                expect_error(what, c.request(cmd, 0, count, flags=bit).error, N.EINVAL)
                still_works(c, what)
            # A write's payload follows whatever its flags say: the server must
            # consume it and stay in sync.
            what = "%s write with unknown flag 0x%x" % (mode, bit)
            expect_error(what, c.write(0, b"\xee" * 512, flags=bit).error, N.EINVAL)
            still_works(c, what)
        # Flags that exist but do not belong to the command.
        for cmd, flag, name in ((N.CMD_READ, N.CMD_FLAG_NO_HOLE, "read with NO_HOLE"),
                                (N.CMD_TRIM, N.CMD_FLAG_REQ_ONE, "trim with REQ_ONE"),
                                (N.CMD_READ, N.CMD_FLAG_FAST_ZERO, "read with FAST_ZERO")):
            what = "%s %s" % (mode, name)
            expect_error(what, c.request(cmd, 0, 512, flags=flag).error, N.EINVAL)
            still_works(c, what)
        what = "%s unknown command 42" % mode
        expect_error(what, c.request(42, 0, 512).error, N.EINVAL)
        still_works(c, what)
        for off, n in ((4096, 0), (0, 4096), (4096, 4096)):
            what = "%s flush with offset %d length %d" % (mode, off, n)
            expect_error(what, c.request(N.CMD_FLUSH, off, n).error, N.EINVAL)
            still_works(c, what)
        expect_error("%s plain flush" % mode, c.request(N.CMD_FLUSH).error, 0)
        if structured:
            check(c.eflags & N.FLAG_SEND_DF, "SEND_DF not advertised with structured replies")
            r = c.read(0, 65536, flags=N.CMD_FLAG_DF)
            expect_error("DF read of 64 KiB", r.error, 0)
            check(r.data == bytes(65536), "DF read of 64 KiB: wrong data")
            # DF means the reply comes as one chunk.
            data_chunks = [t for t, _, _ in r.chunks if t in (N.REPLY_TYPE_OFFSET_DATA,
                                                               N.REPLY_TYPE_OFFSET_HOLE)]
            check(len(data_chunks) == 1, "DF read came in %d chunks" % len(data_chunks))
            what = "DF read of 64 KiB + 1"
            expect_error(what, c.read(0, 65537, flags=N.CMD_FLAG_DF).error, N.EOVERFLOW)
            still_works(c, what)
            what = "DF read of 1 MiB"
            expect_error(what, c.read(0, 1 << 20, flags=N.CMD_FLAG_DF).error, N.EOVERFLOW)
            still_works(c, what)
        c.disconnect()
        b.stop()


main(lambda: (run(False), run(True)))
