#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_decode into tests/fuzz/corpus/decode/.

Input layout (see fuzz_decode.c): mode byte, split-seed byte, then the byte stream.
The sealed Commit uses vector M-2 of spec/wire.md §M3, so no XXH3 is needed here."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "decode")


def header(command, size, fields=()):
    h = bytearray(256)
    struct.pack_into("<I", h, 48, size)
    h[60] = command
    for off, fmt, value in fields:
        struct.pack_into(fmt, h, off, value)
    return h


def ping():
    return header(1, 256)


def request(body):
    # client 1, operation SendMessages (160), session 1, request 1
    h = header(5, 256 + len(body),
               [(128, "<Q", 1), (176, "<B", 160), (184, "<Q", 1), (168, "<Q", 1)])
    return h + body


def commit_sealed():
    h = header(9, 256)  # everything else zero: vector M-2
    h[0:16] = bytes.fromhex("1d44e90c4e359bdb0000000000000000")
    return h


def prepare_unsealed(body):
    # checksum 0 and checksum_body 0: neither is verified
    return header(6, 256 + len(body), [(176, "<Q", 1), (208, "<B", 160)]) + body


def oversize():
    return header(5, 0xFFFFFFFF)


SEEDS = {
    "ping": b"\x00\x00" + ping(),
    "request_body": b"\x09\x05" + request(bytes(range(100))),
    "commit_sealed": b"\x00\x07" + commit_sealed(),
    "oversize": b"\x08\x00" + oversize(),
    "stream_direct": b"\x15\x33" + ping() + request(b"x" * 3000) + commit_sealed()
    + prepare_unsealed(b"abcd"),
    # bit 5: the harness reseals every frame, so sealed control frames pass their checksum
    "resealed_control": b"\x28\x11" + header(11, 256 + 512, [(128, "<Q", 5), (224, "<Q", 3)])
    + bytes(512) + header(18, 256, [(144, "<Q", 1), (152, "<Q", 2)])
    + header(27, 256, [(128, "<Q", 1), (144, "<Q", 1), (255, "<B", 1)]),
    "stream_tiny_pool": b"\x1a\x44" + request(b"y" * 1000) + request(b"z" * 10)
    + request(b"w" * 2000) + ping(),
}

os.makedirs(OUT, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
