#!/usr/bin/python3
"""Writes the seed corpus for fuzz-server: whole client sessions, good and bad.

Run from this folder: ./make-corpus.py corpus/
"""
import os
import struct
import sys

IHAVEOPT = 0x49484156454F5054
REQ = 0x25609513


def opt(option, data=b""):
    return struct.pack(">QII", IHAVEOPT, option, len(data)) + data


def meta(option, name=b"", queries=(b"base:allocation",)):
    data = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        data += struct.pack(">I", len(q)) + q
    return opt(option, data)


def go(name=b"", infos=(1, 2, 3), option=7):
    return opt(option, struct.pack(">I", len(name)) + name +
               struct.pack(">H", len(infos)) + b"".join(struct.pack(">H", i) for i in infos))


def req(cmd, offset=0, count=0, flags=0, cookie=1, payload=b""):
    return struct.pack(">IHHQQI", REQ, flags, cmd, cookie, offset, count) + payload


FLAGS = struct.pack(">I", 3)  # fixed newstyle, no zeroes
WORK = (req(1, 0, 512, 0, 1, b"\xab" * 512) + req(0, 0, 512, cookie=2) +
        req(1, 4096, 100, 1, 3, b"\x01" * 100) + req(3, cookie=4) +
        req(4, 0, 4096, cookie=5) + req(6, 8192, 4096, 2, 6) + req(6, 0, 65536, 16, 7) +
        req(7, 0, 1 << 20, 0, 8) + req(7, 0, 1 << 20, 8, 9) + req(5, 0, 65536, cookie=10) +
        req(0, 0, 70000, 4, 11) + req(0, 1 << 20, 1, cookie=12) + req(9, cookie=13) +
        req(2, cookie=14))

SEEDS = {
    "structured-session": FLAGS + opt(8) + meta(10) + go() + WORK,
    "simple-session": FLAGS + go() + WORK,
    "export-name-session": struct.pack(">I", 1) + opt(1, b"") + WORK,
    "list-info-abort": FLAGS + opt(3) + go(option=6) + meta(9, queries=()) + opt(2),
    "unknown-export": FLAGS + go(b"nope") + opt(1, b"nope"),
    "unknown-option": FLAGS + opt(99, b"xyz") + opt(5) + go(),
    "bad-option-magic": FLAGS + struct.pack(">QII", 1, 7, 0),
    "bad-request-magic": FLAGS + go() + struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 512),
    "oversize-write": FLAGS + go() + req(1, 0, 64 << 20),
    "truncated-write": FLAGS + go() + req(1, 0, 4096, payload=b"x" * 100),
    "truncated-header": FLAGS + go() + req(0, 0, 512)[:10],
    "meta-without-structured": FLAGS + meta(10) + go() + req(7, 0, 4096),
    "malformed-go": FLAGS + opt(7, b"\x00\x00\x10\x00abc"),
}

out = sys.argv[1] if len(sys.argv) > 1 else "corpus"
os.makedirs(out, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
