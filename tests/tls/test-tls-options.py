"""STARTTLS option by option, with a raw client and Python's ssl module
(proto.md, "TLS support"). --tls=require: before TLS every option but
STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD and no reply names an export;
EXPORT_NAME ends the session without a byte of the export; STARTTLS with data
is invalid; after the upgrade the negotiation starts over (nothing agreed in
plaintext survives), a second STARTTLS is invalid, and the client is served.
Bytes that are not TLS after the ACK end the session. A TLS client that
vanishes with requests in flight leaves no descriptor behind, and SIGTERM
amid a stream of TLS writes (libnbd) exits 0 with every acknowledged write
in the file. --tls=on serves both
plaintext and TLS clients, and splices large reads for the plaintext ones
only; --tls=off answers STARTTLS with NBD_REP_ERR_POLICY."""
import os
import shutil
import ssl
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import nbdraw as N  # noqa: E402
from itest import served, check, main, skip, MiB, wait_until, nfds, check_no_fd_leak  # noqa: E402

SRCDIR = os.environ["SRCDIR"]
SECRET = "secret-export"
DISK_MIB = 16


def expect_opt_error(c, what, option, data, want):
    """OPTION with DATA must be answered with error reply WANT; returns its message."""
    try:
        c.option(option, data)
    except N.OptionError as e:
        check(e.reply == want, "%s: reply 0x%x, expected 0x%x" % (what, e.reply, want))
        return e.message
    raise AssertionError("%s: succeeded, expected reply 0x%x" % (what, want))


def plain(b):
    """A raw client on B's socket, greeted."""
    c = N.Client(b.sock)
    c.greeting()
    return c


def starttls(c, certs):
    """Sends STARTTLS on C and upgrades its socket with ssl; returns C."""
    check(c.option(N.OPT_STARTTLS) == [], "STARTTLS: replies before the ACK")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "ca-cert.pem"))
    c.sock = ctx.wrap_socket(c.sock, server_hostname="localhost")
    return c


def tls_client(b, certs):
    """A raw client on B's socket, greeted and upgraded to TLS."""
    return starttls(plain(b), certs)


def require_mode(b, certs):
    """--tls=require: nothing before TLS, everything after it."""
    c = plain(b)
    name = struct_name(SECRET)
    meta = N.Client._meta_payload(SECRET, ["base:allocation"])
    go = N.Client._go_payload(SECRET, (N.INFO_NAME, N.INFO_DESCRIPTION, N.INFO_BLOCK_SIZE))
    for what, opt, data in (("LIST", N.OPT_LIST, b""),
                            ("INFO", N.OPT_INFO, go),
                            ("GO", N.OPT_GO, go),
                            ("GO on an unknown export", N.OPT_GO, N.Client._go_payload("nosuch", ())),
                            ("STRUCTURED_REPLY", N.OPT_STRUCTURED_REPLY, b""),
                            ("LIST_META_CONTEXT", N.OPT_LIST_META_CONTEXT, meta),
                            ("SET_META_CONTEXT", N.OPT_SET_META_CONTEXT, meta),
                            ("an unknown option", 200, name)):
        msg = expect_opt_error(c, what + " before TLS", opt, data, N.REP_ERR_TLS_REQD)
        check(SECRET.encode() not in msg, "%s before TLS: the reply names the export: %r" % (what, msg))
    expect_opt_error(c, "STARTTLS with data", N.OPT_STARTTLS, b"x", N.REP_ERR_INVALID)
    # EXPORT_NAME cannot be refused with a reply: the session ends.
    c.send_option(N.OPT_EXPORT_NAME, SECRET.encode())
    check(c.wait_closed(), "EXPORT_NAME before TLS: the session goes on")
    c.close()
    check("without TLS (--tls=require): closing" in b.logtext(), "EXPORT_NAME before TLS not logged")

    # ABORT is answered in plaintext.
    c = plain(b)
    c.opt_abort()
    _, reply, _ = c.recv_option_reply()
    check(reply == N.REP_ACK, "ABORT before TLS: reply 0x%x" % reply)
    check(c.wait_closed(), "ABORT before TLS: the session goes on")
    c.close()

    # Over TLS: a second STARTTLS is invalid, and everything is served.
    c = tls_client(b, certs)
    expect_opt_error(c, "a second STARTTLS", N.OPT_STARTTLS, b"", N.REP_ERR_INVALID)
    check(c.opt_list() == [SECRET], "LIST over TLS")
    c.opt_structured_reply()
    c.opt_go(SECRET)
    check(c.size == DISK_MIB * MiB, "GO over TLS: size %d" % c.size)
    data = os.urandom(256 << 10)
    r = c.write(1 * MiB, data)
    check(r.error == 0, "write over TLS: %r" % r)
    r = c.read(1 * MiB, len(data))
    check(r.error == 0 and r.data == data, "read over TLS: %r" % r)
    c.disconnect()
    c.close()

    # Not TLS after the ACK: a plaintext option where a ClientHello belongs.
    c = plain(b)
    check(c.option(N.OPT_STARTTLS) == [], "STARTTLS: replies before the ACK")
    c.send_option(N.OPT_GO, go)
    check(c.wait_closed(), "plaintext after the STARTTLS ACK: the session goes on")
    c.close()
    check(wait_until(lambda: "TLS: " in b.logtext()), "a failed TLS handshake was not logged")


def struct_name(name):
    """NAME as the length-prefixed string options carry."""
    nb = name.encode()
    return len(nb).to_bytes(4, "big") + nb


def vanish_and_drain(b, certs, disk):
    """A TLS client that vanishes mid-request costs nothing afterwards;
    SIGTERM in the middle of a stream of TLS writes exits 0, and every
    write acknowledged (through the pump) is in the file."""
    import nbd
    base = nfds(b.proc.pid)
    for _ in range(3):
        c = tls_client(b, certs)
        c.opt_go(SECRET)
        for i in range(16):
            c.send_request(N.CMD_READ, i * 64 << 10, 64 << 10)
        c.send_request(N.CMD_WRITE, 0, 1 << 20, data=os.urandom(1 << 20))
        c.sock.close()
    check_no_fd_leak(b, base, "TLS clients that vanished")

    idle = tls_client(b, certs)
    idle.opt_go(SECRET)
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(certs)
    h.set_export_name(SECRET)
    h.connect_unix(b.sock)
    bufs = [nbd.Buffer.from_bytearray(bytearray([i + 1]) * MiB) for i in range(DISK_MIB)]
    cookies = [h.aio_pwrite(bufs[i], i * MiB) for i in range(DISK_MIB)]
    while h.aio_in_flight() == len(cookies):   # until blockd is busy with them
        h.poll(1000)
    b.proc.send_signal(15)
    while h.aio_in_flight() > 0 and not h.aio_is_dead():
        h.poll(1000)
    rc = b.proc.wait(timeout=20)
    check(rc == 0, "blockd exited %d after SIGTERM with TLS clients" % rc)
    acked, errors = [], {}
    for i, c in enumerate(cookies):
        try:
            if h.aio_command_completed(c):
                acked.append(i)
        except nbd.Error as e:   # ESHUTDOWN, or cut off: not acknowledged
            errors[e.errnum] = errors.get(e.errnum, 0) + 1
    check(acked, "no write acknowledged over TLS")
    with open(disk, "rb") as f:
        for i in acked:
            f.seek(i * MiB)
            check(f.read(MiB) == bytes([i + 1]) * MiB, "write %d acknowledged over TLS, not in the file" % i)
    check(idle.wait_closed(), "an idle TLS client still connected after blockd exited")
    idle.close()
    del h
    print("SIGTERM amid %d TLS writes: %d acknowledged, errors %s"
          % (len(cookies), len(acked), {os.strerror(e): n for e, n in errors.items()}))


def pipes_of(pid):
    """How many pipe descriptors process PID holds."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("pipe:")
        except FileNotFoundError:
            pass
    return n


def on_mode(b, certs, disk):
    """--tls=on: a plaintext client and a TLS client are both served. Large
    structured reads are spliced (file -> pipe -> socket) for plaintext
    clients only: a TLS client's socket is its pump's socketpair, and the
    pump copies every byte anyway."""
    data = os.urandom(DISK_MIB * MiB)
    with open(disk, "r+b") as f:
        f.write(data)
    base = pipes_of(b.proc.pid)   # blockd's own, before any client
    with open("/proc/sys/fs/pipe-max-size") as f:
        can_splice = int(f.read()) >= MiB
    tls_uri = "nbds+unix:///%s?socket=%s&tls-certificates=%s" % (SECRET, b.sock, certs)

    def copy_out(what, uri):
        """nbdcopy of the export; returns the most pipes blockd held meanwhile."""
        out = os.path.join(b.tmp, "copy.img")
        p = subprocess.Popen(["nbdcopy", "--request-size=1048576", uri, out])
        most = base
        while p.poll() is None:
            most = max(most, pipes_of(b.proc.pid))
            time.sleep(0.002)
        check(p.returncode == 0, "nbdcopy out of blockd (%s) failed" % what)
        with open(out, "rb") as f:
            check(f.read() == data, "nbdcopy out of blockd (%s): wrong data" % what)
        os.unlink(out)
        return most

    # The pipes are sampled while nbdcopy runs: a loaded machine may miss
    # them once, so the plaintext copy gets three tries.
    if can_splice:
        check(any(copy_out("plaintext", b.uri(SECRET)) > base for _ in range(3)),
              "plaintext 1 MiB structured reads were not spliced: the TLS check means nothing")
    for _ in range(2):
        check(copy_out("TLS", tls_uri) == base,
              "a TLS connection's reads were spliced to its socketpair")
    # What a client agreed in plaintext does not survive STARTTLS: without a
    # new STRUCTURED_REPLY inside TLS, replies are simple.
    c = plain(b)
    c.opt_structured_reply()
    starttls(c, certs)
    c.structured = False
    c.opt_go(SECRET)
    cookie = c.send_request(N.CMD_READ, 0, 4096)
    (magic,) = struct.unpack(">I", c.recv_exact(4))
    check(magic == N.SIMPLE_REPLY_MAGIC,
          "structured replies agreed before STARTTLS survived it (magic 0x%x)" % magic)
    c.pending.pop(cookie)
    c.close()


def run():
    tmp = os.environ.get("TMPDIR", "/tmp")
    for prog, pkg in (("certtool", "gnutls-bin"), ("nbdcopy", "libnbd-bin")):
        if shutil.which(prog) is None:
            skip("%s not installed (%s)" % (prog, pkg))
    try:
        import nbd  # noqa: F401
    except ImportError:
        skip("python3-libnbd not installed")
    certdir = os.path.join(tmp, "blockd-tls-certs.%d" % os.getpid())
    try:
        subprocess.run([os.path.join(SRCDIR, "tests/tls/mkcerts.sh"), certdir], check=True)
        server = os.path.join(certdir, "server")
        client = os.path.join(certdir, "client")
        export = ["--export", SECRET + "=@TMP@/s.img"]
        files = [("s.img", DISK_MIB * MiB)]
        with served("--tls=require", "--tls-certificates", server, *export,
                    disk=None, extra_files=files) as (b, _):
            require_mode(b, client)
            vanish_and_drain(b, client, os.path.join(b.tmp, "s.img"))
        with served("--tls=on", "--tls-certificates", server, *export,
                    disk=None, extra_files=files) as (b, _):
            on_mode(b, client, os.path.join(b.tmp, "s.img"))
        with served(*export, disk=None, extra_files=files) as (b, _):
            c = plain(b)
            expect_opt_error(c, "STARTTLS under --tls=off", N.OPT_STARTTLS, b"", N.REP_ERR_POLICY)
            c.opt_go(SECRET)
            c.disconnect()
    finally:
        subprocess.run(["rm", "-rf", certdir])


if __name__ == "__main__":
    main(run)
