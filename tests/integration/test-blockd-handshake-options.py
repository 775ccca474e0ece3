"""blockd handshake, option by option with a raw client: unknown options get
NBD_REP_ERR_UNSUP and the handshake goes on; GO/INFO on an unknown export get
NBD_REP_ERR_UNKNOWN; EXPORT_NAME on an unknown export closes; LIST, INFO,
meta contexts and ABORT behave as proto.md says."""
import struct

import nbdraw as N
from itest import served, check, main, MiB


def expect_opt_error(what, fn, want):
    """FN must fail with option reply WANT."""
    try:
        fn()
    except N.OptionError as e:
        check(e.reply == want, "%s: reply 0x%x, expected 0x%x" % (what, e.reply, want))
        return
    raise AssertionError("%s: succeeded, expected reply 0x%x" % (what, want))


def run():
    """Options one by one on a server with exports a and b (read-only)."""
    args = ["--export", "a=@TMP@/a.img", "--export", "b=@TMP@/b.img,readonly"]
    with served(*args, disk=None, extra_files=[("a.img", 8 * MiB), ("b.img", 4 * MiB)]) as (b, _):
        c = N.Client(b.sock)
        c.greeting()
        check(c.gflags & N.FLAG_NO_ZEROES, "greeting without NO_ZEROES: 0x%x" % c.gflags)

        # Unknown options, with and without payload: ERR_UNSUP, then go on.
        for opt, data in ((200, b""), (0x7FFF, b"xyz" * 10), (N.OPT_STARTTLS, b"")):
            what = "option %d" % opt
            if opt == N.OPT_STARTTLS:
                # Without TLS support the server may say UNSUP or POLICY.
                try:
                    c.option(opt, data)
                    raise AssertionError("STARTTLS accepted by a server without TLS")
                except N.OptionError as e:
                    check(e.reply in (N.REP_ERR_UNSUP, N.REP_ERR_POLICY),
                          "STARTTLS: reply 0x%x" % e.reply)
                continue
            expect_opt_error(what, lambda: c.option(opt, data), N.REP_ERR_UNSUP)

        names = sorted(c.opt_list())
        check(names == ["a", "b"], "LIST gave %r, expected ['a', 'b']" % names)

        expect_opt_error("GO on an unknown export",
                         lambda: c.opt_go("nosuch"), N.REP_ERR_UNKNOWN)
        expect_opt_error("INFO on an unknown export",
                         lambda: c.opt_go("nosuch", option=N.OPT_INFO), N.REP_ERR_UNKNOWN)
        expect_opt_error("GO on the default export when only named ones exist",
                         lambda: c.opt_go(""), N.REP_ERR_UNKNOWN)
        expect_opt_error("STRUCTURED_REPLY with a payload",
                         lambda: c.option(N.OPT_STRUCTURED_REPLY, b"x"), N.REP_ERR_INVALID)

        infos = c.opt_go("b", infos=(N.INFO_NAME, N.INFO_DESCRIPTION, N.INFO_BLOCK_SIZE),
                         option=N.OPT_INFO)
        check(c.size == 4 * MiB, "INFO b: size %d" % c.size)
        check(c.eflags & N.FLAG_HAS_FLAGS and c.eflags & N.FLAG_READ_ONLY,
              "INFO b: flags 0x%x lack HAS_FLAGS|READ_ONLY" % c.eflags)
        check(c.block_size() == (1, 4096, 32 * MiB), "INFO b: block size %r" % (c.block_size(),))
        if N.INFO_NAME in infos:
            check(infos[N.INFO_NAME] == b"b", "INFO b: name %r" % infos[N.INFO_NAME])

        # proto.md: SET_META_CONTEXT needs structured replies first.
        expect_opt_error("SET_META_CONTEXT before STRUCTURED_REPLY",
                         lambda: c.opt_meta_context("a", ["base:allocation"]),
                         N.REP_ERR_INVALID)

        c.opt_structured_reply()
        got = c.opt_meta_context("a", ["base:allocation"], option=N.OPT_LIST_META_CONTEXT)
        check(list(got) == ["base:allocation"], "LIST_META_CONTEXT gave %r" % got)
        got = c.opt_meta_context("a", [], option=N.OPT_LIST_META_CONTEXT)
        check("base:allocation" in got, "LIST_META_CONTEXT (all) gave %r" % got)
        got = c.opt_meta_context("a", ["nosuch:context"])
        check(got == {}, "SET_META_CONTEXT of an unknown context gave %r" % got)
        # proto.md does not fix this answer; the handshake must just go on.
        try:
            c.opt_meta_context("nosuch", ["base:allocation"])
        except N.OptionError as e:
            check(e.reply in (N.REP_ERR_UNKNOWN, N.REP_ERR_INVALID),
                  "SET_META_CONTEXT on an unknown export: reply 0x%x" % e.reply)
        got = c.opt_meta_context("a", ["base:allocation"])
        check(list(got) == ["base:allocation"], "SET_META_CONTEXT gave %r" % got)

        # Still in the handshake after all that: GO works.
        c.opt_go("a")
        check(c.size == 8 * MiB, "GO a: size %d" % c.size)
        check(not c.eflags & N.FLAG_READ_ONLY, "GO a: read-only flag set")
        r = c.request(N.CMD_BLOCK_STATUS, 0, 8 * MiB)
        check(r.error == 0 and got["base:allocation"] in r.extents,
              "block status after the handshake: %r" % r)
        c.disconnect()

        # EXPORT_NAME on an unknown name: no reply is possible, the server closes.
        c = N.Client(b.sock)
        c.greeting()
        c.send_option(N.OPT_EXPORT_NAME, b"nosuch")
        check(c.wait_closed(10), "EXPORT_NAME nosuch: connection left open")
        c.close()

        # EXPORT_NAME on a known name, without NO_ZEROES.
        c = N.Client(b.sock)
        magic, version, gflags = struct.unpack(">QQH", c.recv_exact(18))
        c.send(struct.pack(">I", N.FLAG_FIXED_NEWSTYLE))
        c.opt_export_name("a")
        check(c.size == 8 * MiB, "EXPORT_NAME a: size %d" % c.size)
        r = c.read(0, 512)
        check(r.error == 0 and not r.structured, "read after EXPORT_NAME: %r" % r)
        c.disconnect()

        # ABORT: proto.md says the server MUST reply with an ACK, then closes.
        c = N.Client(b.sock)
        c.greeting()
        c.opt_abort()
        opt, reply, _ = c.recv_option_reply()
        check(opt == N.OPT_ABORT and reply == N.REP_ACK,
              "ABORT: reply 0x%x to option %d, expected ACK" % (reply, opt))
        check(c.wait_closed(10), "ABORT: connection left open")
        c.close()

        # LIST with data: ERR_INVALID, and the handshake goes on.
        c = N.Client(b.sock)
        c.greeting()
        expect_opt_error("LIST with data", lambda: c.option(N.OPT_LIST, b"junk"),
                         N.REP_ERR_INVALID)
        check(sorted(c.opt_list()) == ["a", "b"], "LIST after a bad LIST")
        c.opt_abort()
        c.close()
        check(b.proc.poll() is None, "blockd died during the handshake tests")
        b.stop()


main(run)
