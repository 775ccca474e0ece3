"""nbdkit serving one image through nbdkit-blockd-plugin.so, for the plugin tests.

    with PluginServer(image, "readonly=true", tmp=tmpdir) as srv:
        h = srv.connect()

Skips (exit 77) when nbdkit or the plugin is missing; stops nbdkit and checks
that it exits 0 on SIGTERM.  nbdkit runs through run-nbdkit.sh, which makes
a sanitizer-built plugin loadable (see there).
"""
import os
import shutil
import signal
import subprocess
import time

from testlib import skip  # skips first if Debian's python lacks nbd

import nbd

PLUGIN = os.environ.get("NBDKIT_PLUGIN", "")
NBDKIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run-nbdkit.sh")


def require_plugin():
    if shutil.which("nbdkit") is None:
        skip("nbdkit is not installed")
    if not PLUGIN or not os.path.exists(PLUGIN):
        skip("nbdkit-blockd-plugin.so is not built")


def plugin_formats():
    """Formats built into the plugin, from --dump-plugin."""
    out = subprocess.run([NBDKIT, "--dump-plugin", PLUGIN], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("blockd_formats="):
            return line.split("=", 1)[1].split(",")
    return []


class PluginServer:
    """nbdkit -f on a private unix socket with the plugin and PARAMS."""

    def __init__(self, image, *params, filters=(), tmp):
        require_plugin()
        self.sock = os.path.join(tmp, "nbdkit.sock")
        self.pidfile = os.path.join(tmp, "nbdkit.pid")
        self.logpath = os.path.join(tmp, "nbdkit.log")
        self.args = [NBDKIT, "-f", "-U", self.sock, "-P", self.pidfile]
        self.args += ["--filter=" + f for f in filters]
        self.args += [PLUGIN, "file=" + image, *params]
        self.proc = None

    def start(self):
        for p in (self.pidfile, self.sock):
            if os.path.exists(p):
                os.unlink(p)
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen(self.args, stderr=log)
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("nbdkit exited at start: " + self.log())
            time.sleep(0.05)
        raise RuntimeError("nbdkit did not write its pidfile")

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def connect(self):
        h = nbd.NBD()
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_unix(self.sock)
        return h

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("nbdkit did not exit on SIGTERM")
        if rc != 0:
            raise AssertionError("nbdkit exited %d: %s" % (rc, self.log()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

