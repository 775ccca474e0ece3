"""A raw NBD client over a socket, for tests that must send what libnbd refuses to.

It speaks the fixed newstyle handshake by hand (NetworkBlockDevice/nbd
doc/proto.md) and lets a test send any request, well-formed or not, then read
the simple or structured reply.  Only the standard library is used.

    c = Client(sock_path)
    c.handshake(name="", structured=True, meta=["base:allocation"])
    r = c.request(CMD_READ, 0, 4096)       # send + wait for the reply
    assert r.error == 0 and len(r.data) == 4096
"""
import select
import socket
import struct
import time

# Handshake.
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = 1 << 31 | 1
REP_ERR_POLICY = 1 << 31 | 2
REP_ERR_INVALID = 1 << 31 | 3
REP_ERR_PLATFORM = 1 << 31 | 4
REP_ERR_TLS_REQD = 1 << 31 | 5
REP_ERR_UNKNOWN = 1 << 31 | 6
REP_ERR_SHUTDOWN = 1 << 31 | 7
REP_ERR_TOO_BIG = 1 << 31 | 9

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# Transmission flags.
FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

# Transmission.
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = 1 << 15 | 1
REPLY_TYPE_ERROR_OFFSET = 1 << 15 | 2

STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1

# Error numbers on the wire.
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

ERRNAMES = {0: "OK", EPERM: "EPERM", EIO: "EIO", ENOMEM: "ENOMEM", EINVAL: "EINVAL",
            ENOSPC: "ENOSPC", EOVERFLOW: "EOVERFLOW", ENOTSUP: "ENOTSUP",
            ESHUTDOWN: "ESHUTDOWN"}


def errname(e):
    """Names an NBD error number ('EINVAL'), or gives the number."""
    return ERRNAMES.get(e, str(e))


class ProtocolError(Exception):
    """The server sent something the protocol does not allow."""


class Closed(Exception):
    """The server closed the connection."""


class OptionError(Exception):
    """An option was answered with an NBD_REP_ERR_* reply."""

    def __init__(self, option, reply, message):
        super().__init__("option %d: reply 0x%x %r" % (option, reply, message))
        self.option = option
        self.reply = reply
        self.message = message


class Reply:
    """The complete answer to one request."""

    def __init__(self, cookie):
        self.cookie = cookie     # echoed from the request
        self.error = 0           # NBD error number, 0 on success
        self.message = b""       # structured error message, if any
        self.data = None         # bytes read, for CMD_READ
        self.structured = False  # True if it came as structured chunks
        self.chunks = []         # [(type, flags, payload)] for structured replies
        self.extents = {}        # block status: context id -> [(length, flags)]

    def __repr__(self):
        return "<Reply cookie=%d error=%s chunks=%s>" % (
            self.cookie, errname(self.error), [c[0] for c in self.chunks])


class Client:
    """One NBD connection over a unix socket (or any connected socket)."""

    def __init__(self, path=None, sock=None, timeout=10):
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        self.sock = sock
        self.gflags = 0
        self.no_zeroes = False
        self.structured = False
        self.contexts = {}       # context name -> id
        self.size = None
        self.eflags = None
        self.infos = {}          # NBD_INFO_* -> raw payload (after the type)
        self.pending = {}        # cookie -> (type, count, offset)
        self.partial = {}        # cookie -> [Reply, read buffer, bytes covered]
        self.next_cookie = 1

    # ---- bytes -------------------------------------------------------------

    def send(self, data):
        """Sends all of DATA."""
        self.sock.sendall(data)

    def recv_exact(self, n):
        """Reads exactly N bytes; raises Closed on EOF."""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except ConnectionResetError:
                k = 0
            if not k:
                raise Closed("server closed the connection after %d of %d bytes" % (got, n))
            got += k
        return bytes(buf)

    def close(self):
        """Closes the socket, ignoring errors."""
        try:
            self.sock.close()
        except OSError:
            pass

    def wait_closed(self, timeout=5):
        """True if the server closes the connection within TIMEOUT seconds.

        Anything the server sends first (replies to earlier requests) is
        read and ignored."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
            try:
                chunk = self.sock.recv(1 << 16)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
            if not chunk:
                return True

    # ---- handshake ---------------------------------------------------------

    def greeting(self):
        """Reads the server's greeting and sends the client flags."""
        magic, version, gflags = struct.unpack(">QQH", self.recv_exact(18))
        if magic != NBDMAGIC or version != IHAVEOPT:
            raise ProtocolError("bad greeting %x %x" % (magic, version))
        if not gflags & FLAG_FIXED_NEWSTYLE:
            raise ProtocolError("server is not fixed newstyle: 0x%x" % gflags)
        self.gflags = gflags
        cflags = FLAG_FIXED_NEWSTYLE
        if gflags & FLAG_NO_ZEROES:
            cflags |= FLAG_NO_ZEROES
            self.no_zeroes = True
        self.send(struct.pack(">I", cflags))

    def send_option(self, option, data=b""):
        """Sends one option request (header and DATA)."""
        self.send(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)

    def recv_option_reply(self):
        """Returns (option, reply type, payload) of one option reply."""
        magic, option, reply, length = struct.unpack(">QIII", self.recv_exact(20))
        if magic != REP_MAGIC:
            raise ProtocolError("bad option reply magic 0x%x" % magic)
        return option, reply, self.recv_exact(length)

    def option(self, option, data=b""):
        """Sends OPTION and collects its replies up to the final one.

        Returns the list of (reply type, payload) before the final ACK;
        raises OptionError on an error reply."""
        self.send_option(option, data)
        replies = []
        while True:
            opt, reply, payload = self.recv_option_reply()
            if opt != option:
                raise ProtocolError("reply to option %d while waiting for %d" % (opt, option))
            if reply & (1 << 31):
                raise OptionError(option, reply, payload)
            if reply == REP_ACK:
                return replies
            replies.append((reply, payload))

    def opt_structured_reply(self):
        """Negotiates structured replies."""
        self.option(OPT_STRUCTURED_REPLY)
        self.structured = True

    @staticmethod
    def _meta_payload(name, queries):
        nb = name.encode()
        data = struct.pack(">I", len(nb)) + nb + struct.pack(">I", len(queries))
        for q in queries:
            qb = q.encode()
            data += struct.pack(">I", len(qb)) + qb
        return data

    def opt_meta_context(self, name, queries, option=OPT_SET_META_CONTEXT):
        """SET (or LIST) meta contexts; returns {context name: id}."""
        result = {}
        for reply, payload in self.option(option, self._meta_payload(name, queries)):
            if reply != REP_META_CONTEXT:
                raise ProtocolError("unexpected reply %d to meta context" % reply)
            (cid,) = struct.unpack(">I", payload[:4])
            result[payload[4:].decode()] = cid
        if option == OPT_SET_META_CONTEXT:
            self.contexts = result
        return result

    @staticmethod
    def _go_payload(name, infos):
        nb = name.encode()
        return (struct.pack(">I", len(nb)) + nb + struct.pack(">H", len(infos))
                + b"".join(struct.pack(">H", i) for i in infos))

    def opt_go(self, name="", infos=(INFO_BLOCK_SIZE,), option=OPT_GO):
        """GO (or INFO) on export NAME; returns {NBD_INFO_*: payload}."""
        got = {}
        for reply, payload in self.option(option, self._go_payload(name, infos)):
            if reply != REP_INFO:
                raise ProtocolError("unexpected reply %d to GO/INFO" % reply)
            (itype,) = struct.unpack(">H", payload[:2])
            got[itype] = payload[2:]
        if INFO_EXPORT not in got:
            raise ProtocolError("GO/INFO without NBD_INFO_EXPORT")
        self.size, self.eflags = struct.unpack(">QH", got[INFO_EXPORT])
        self.infos = got
        return got

    def opt_export_name(self, name=""):
        """The old way into transmission: no reply on failure, just a close."""
        self.send_option(OPT_EXPORT_NAME, name.encode())
        self.size, self.eflags = struct.unpack(">QH", self.recv_exact(10))
        if not self.no_zeroes:
            self.recv_exact(124)

    def opt_list(self):
        """Returns the export names from NBD_OPT_LIST."""
        names = []
        for reply, payload in self.option(OPT_LIST):
            if reply != REP_SERVER:
                raise ProtocolError("unexpected reply %d to LIST" % reply)
            (n,) = struct.unpack(">I", payload[:4])
            names.append(payload[4:4 + n].decode())
        return names

    def opt_abort(self):
        """Sends NBD_OPT_ABORT (the reply, if any, is left to the caller)."""
        self.send_option(OPT_ABORT)

    def block_size(self):
        """(minimum, preferred, maximum) from NBD_INFO_BLOCK_SIZE, or None."""
        p = self.infos.get(INFO_BLOCK_SIZE)
        return struct.unpack(">III", p) if p is not None else None

    def handshake(self, name="", structured=True, meta=()):
        """Greeting, optional structured replies and meta contexts, then GO."""
        self.greeting()
        if structured:
            self.opt_structured_reply()
        if meta:
            self.opt_meta_context(name, list(meta))
        self.opt_go(name)
        return self

    # ---- transmission ------------------------------------------------------

    def send_request(self, cmd, offset=0, count=0, flags=0, data=None,
                     cookie=None, magic=REQUEST_MAGIC):
        """Sends one request (plus DATA for writes); returns its cookie."""
        if cookie is None:
            cookie = self.next_cookie
            self.next_cookie += 1
        if data is None and cmd == CMD_WRITE:
            data = b"\0" * count
        hdr = struct.pack(">IHHQQI", magic, flags, cmd, cookie, offset, count)
        self.pending[cookie] = (cmd, count, offset)
        self.send(hdr + (data or b""))
        return cookie

    def recv_reply(self):
        """Reads until one request's reply is complete and returns it.

        Chunks of different structured replies may interleave (proto.md);
        partial replies are kept until their DONE chunk arrives."""
        while True:
            (magic,) = struct.unpack(">I", self.recv_exact(4))
            if magic == SIMPLE_REPLY_MAGIC:
                return self._recv_simple()
            if magic != STRUCTURED_REPLY_MAGIC:
                raise ProtocolError("bad reply magic 0x%x" % magic)
            if not self.structured:
                raise ProtocolError("structured reply without negotiation")
            r = self._recv_chunk()
            if r is not None:
                return r

    def _recv_simple(self):
        error, cookie = struct.unpack(">IQ", self.recv_exact(12))
        if cookie not in self.pending:
            raise ProtocolError("simple reply for unknown cookie %d" % cookie)
        if cookie in self.partial:
            raise ProtocolError("simple reply for cookie %d after its chunks" % cookie)
        cmd, count, _ = self.pending.pop(cookie)
        r = Reply(cookie)
        r.error = error
        if cmd == CMD_READ and error == 0:
            r.data = self.recv_exact(count)
        return r

    def _recv_chunk(self):
        """Reads one chunk; returns the Reply if it was the last one."""
        flags, rtype, cookie, length = struct.unpack(">HHQI", self.recv_exact(16))
        payload = self.recv_exact(length)
        if cookie not in self.pending:
            raise ProtocolError("chunk for unknown cookie %d" % cookie)
        cmd, count, offset = self.pending[cookie]
        if cookie not in self.partial:
            r = Reply(cookie)
            r.structured = True
            # The read buffer is made at the first content chunk: an error
            # reply to a huge read must not cost a huge buffer here.
            self.partial[cookie] = [r, None, 0]
        state = self.partial[cookie]
        r = state[0]
        if rtype in (REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE) and state[1] is None:
            if cmd != CMD_READ:
                raise ProtocolError("content chunk in reply to command %d" % cmd)
            state[1] = bytearray(count)
        buf = state[1]
        r.chunks.append((rtype, flags, payload))
        if rtype == REPLY_TYPE_NONE:
            if length != 0 or not flags & REPLY_FLAG_DONE:
                raise ProtocolError("NONE chunk with length or without DONE")
        elif rtype == REPLY_TYPE_OFFSET_DATA:
            (off,) = struct.unpack(">Q", payload[:8])
            data = payload[8:]
            if cmd != CMD_READ or off < offset or off + len(data) > offset + count \
                    or not data:
                raise ProtocolError("bad OFFSET_DATA chunk")
            buf[off - offset:off - offset + len(data)] = data
            state[2] += len(data)
        elif rtype == REPLY_TYPE_OFFSET_HOLE:
            off, hlen = struct.unpack(">QI", payload)
            if cmd != CMD_READ or off < offset or off + hlen > offset + count \
                    or hlen == 0:
                raise ProtocolError("bad OFFSET_HOLE chunk")
            buf[off - offset:off - offset + hlen] = bytes(hlen)
            state[2] += hlen
        elif rtype == REPLY_TYPE_BLOCK_STATUS:
            (cid,) = struct.unpack(">I", payload[:4])
            desc = payload[4:]
            if cmd != CMD_BLOCK_STATUS or len(desc) % 8 or not desc:
                raise ProtocolError("bad BLOCK_STATUS chunk")
            r.extents[cid] = [struct.unpack(">II", desc[i:i + 8])
                              for i in range(0, len(desc), 8)]
        elif rtype & (1 << 15):
            err, mlen = struct.unpack(">IH", payload[:6])
            r.error = err
            r.message = payload[6:6 + mlen]
            if err == 0:
                raise ProtocolError("error chunk with error 0")
        else:
            raise ProtocolError("unknown chunk type %d" % rtype)
        if not flags & REPLY_FLAG_DONE:
            return None
        del self.partial[cookie]
        del self.pending[cookie]
        if cmd == CMD_READ and r.error == 0:
            if state[2] != count:
                raise ProtocolError("read chunks cover %d of %d bytes" % (state[2], count))
            r.data = bytes(buf) if buf is not None else b""
        return r

    def request(self, cmd, offset=0, count=0, flags=0, data=None):
        """Sends one request and waits for its reply."""
        cookie = self.send_request(cmd, offset, count, flags, data)
        r = self.recv_reply()
        if r.cookie != cookie:
            raise ProtocolError("reply for cookie %d, expected %d" % (r.cookie, cookie))
        return r

    def read(self, offset, count, flags=0):
        """NBD_CMD_READ of COUNT bytes at OFFSET; waits for the reply."""
        return self.request(CMD_READ, offset, count, flags)

    def write(self, offset, data, flags=0):
        """NBD_CMD_WRITE of DATA at OFFSET; waits for the reply."""
        return self.request(CMD_WRITE, offset, len(data), flags, data)

    def disconnect(self):
        """NBD_CMD_DISC (no reply), then close."""
        try:
            self.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self.close()
