#!/usr/bin/python3
"""Every option a program's --help lists is in its manual page (in the
SYNOPSIS and again in the body) and in its README section; every option
a page's SYNOPSIS shows is one --help lists. So the help, the pages and the
README cannot drift apart unnoticed.

Options are what --help spells as -x, --long, a sub-option of a FILE spec
([,readonly], [,format=F]), a blockd-img command, or a plugin's key=. The
pages are read as man(1) renders them (built pages, build/docs/man)."""
import os
import re
import shutil
import subprocess
import sys

SKIP = 77
SRCDIR = os.environ["SRCDIR"]
BUILDDIR = os.environ["BUILDDIR"]
MANDIR = os.path.join(BUILDDIR, "docs", "man")
# What a README section may leave out: every program has them.
README_EXEMPT = {"--help", "-h", "--version", "-V"}
# Not a token's own character: what may stand either side of an option.
EDGE = r"[A-Za-z0-9_-]"

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg, file=sys.stderr)


def run(argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    if r.returncode != 0:
        print(r.stdout, file=sys.stderr)
        sys.exit("FAIL: %s exited %d" % (" ".join(argv), r.returncode))
    return r.stdout


def help_options(text, plugin):
    """The options TEXT (a --help) lists, as a list of alias groups (a
    short and a long spelling of one option are one group)."""
    groups = []
    if plugin:
        # nbdkit PLUGIN --help: the plugin's own part follows nbdkit's,
        # after the line naming the plugin file.
        text = text[text.index("nbdkit-blockd-plugin.so)"):]
        for key in re.findall(r"^([a-z][a-z-]*)=", text, re.M):
            groups.append({key + "="})
        return groups
    aliases = {}
    for short, long_ in re.findall(r"(?<!%s)(-[A-Za-z]), (--[a-z][a-z0-9-]*)" % EDGE, text):
        aliases[short] = aliases[long_] = {short, long_}
    seen = set()
    for opt in re.findall(r"(?<!%s)(--?[A-Za-z][A-Za-z0-9-]*)" % EDGE, text):
        if not re.fullmatch(r"-[A-Za-z]|--[a-z][a-z0-9-]*", opt) or opt in seen:
            continue
        group = aliases.get(opt, {opt})
        seen |= group
        groups.append(group)
    # Sub-options of a spec: [,readonly], [,format=raw|qcow2|overlay].
    for sub, eq in re.findall(r"\[,([a-z]+)(=?)", text):
        if sub + eq not in seen:
            seen.add(sub + eq)
            groups.append({sub + eq})
    # blockd-img's commands: "  create [--force] ...".
    for cmd in re.findall(r"^  ([a-z]+) (?=[\[-])", text, re.M):
        if cmd not in seen:
            seen.add(cmd)
            groups.append({cmd})
    return groups


def has(text, opt):
    """Whether OPT stands in TEXT as a token of its own."""
    tail = "" if opt.endswith("=") else "(?!%s)" % EDGE
    return re.search("(?<!%s)%s%s" % (EDGE, re.escape(opt), tail), text) is not None


def render(page):
    """PAGE as man(1) prints it: plain text, no hyphenation, long lines."""
    env = dict(os.environ, MANWIDTH="250", MANROFFOPT="-rHY=0", LC_ALL="C.UTF-8")
    env.pop("MAN_KEEP_FORMATTING", None)
    r = subprocess.run(["man", "-l", page], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, universal_newlines=True)
    if r.returncode != 0 or r.stderr:
        sys.exit("FAIL: man -l %s: %s" % (page, r.stderr.strip()))
    return re.sub(".\b", "", r.stdout)


def sections(text):
    """The rendered page's sections, {NAME: body}."""
    out, name = {}, None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Z ]*$", line):
            name = line
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return out


def readme_section(heading):
    """The README's text from the line HEADING to the next heading (lines
    starting with # inside code blocks are not headings)."""
    lines = open(os.path.join(SRCDIR, "README.md")).read().splitlines()
    try:
        i = lines.index(heading)
    except ValueError:
        sys.exit("FAIL: README.md has no heading '%s'" % heading)
    out, fenced = [], False
    for line in lines[i + 1:]:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            break
        out.append(line)
    return "\n".join(out)


def check(name, help_argv, page, heading, plugin=False):
    path = os.path.join(MANDIR, page)
    if not os.path.exists(path):
        fail("%s: no manual page %s" % (name, path))
        return
    before = len(failures)
    groups = help_options(run(help_argv), plugin)
    if len(groups) < 3:
        fail("%s: only %d options found in --help: the parser is wrong" % (name, len(groups)))
    secs = sections(render(path))
    synopsis = secs.get("SYNOPSIS", "")
    body = "".join(v for k, v in secs.items() if k not in ("SYNOPSIS", "NAME"))
    readme = readme_section(heading)
    for group in groups:
        spelled = " or ".join(sorted(group))
        for opt in sorted(group):
            if not has(body, opt):
                fail("%s: %s is in --help but not described in %s" % (name, opt, page))
        if not group & README_EXEMPT:
            if not any(has(synopsis, o) for o in group):
                fail("%s: %s is in --help but not in the SYNOPSIS of %s" % (name, spelled, page))
            if not any(has(readme, o) for o in group):
                fail("%s: %s is in --help but not in README.md's '%s'" % (name, spelled, heading))
    # The other way: what the synopsis shows must exist.
    listed = set().union(*groups)
    pattern = r"(?<!%s)([a-z][a-z-]*=)" if plugin else r"(?<!%s)(--?[A-Za-z][A-Za-z0-9-]*)"
    for opt in set(re.findall(pattern % EDGE, synopsis)):
        if opt not in listed:
            fail("%s: the SYNOPSIS of %s shows %s, which --help does not list" % (name, page, opt))
    if len(failures) == before:
        print("%s: %d options in --help, %s and README.md agree" % (name, len(groups), page))


def main():
    if shutil.which("man") is None:
        print("SKIP: man not installed (man-db)", file=sys.stderr)
        return SKIP
    check("blockd", [os.environ["BLOCKD"], "--help"], "blockd.8", "## blockd")
    if os.environ.get("BLOCKD_IMG"):
        check("blockd-img", [os.environ["BLOCKD_IMG"], "--help"], "blockd-img.1", "## blockd-img")
    if os.environ.get("BLOCKD_LAUNCH"):
        check("blockd-launch", [os.environ["BLOCKD_LAUNCH"], "--help"], "blockd-launch.1",
              "## blockd-launch")
    if os.environ.get("NBDKIT_PLUGIN") and shutil.which("nbdkit"):
        check("nbdkit-blockd-plugin", ["nbdkit", os.environ["NBDKIT_PLUGIN"], "--help"],
              "nbdkit-blockd-plugin.1", "## nbdkit plugin", plugin=True)
    else:
        print("nbdkit-blockd-plugin: not built or no nbdkit, not checked")
    if failures:
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
