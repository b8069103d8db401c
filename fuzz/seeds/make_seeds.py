#!/usr/bin/env python3
"""Writes the committed seed corpus for the fuzz targets (stdlib only, deterministic).

    python3 fuzz/seeds/make_seeds.py

rank_request/: encoded rankd.v1.RankRequest messages (proto/proto/rankd/v1/ranker.proto),
valid ones and one for each rule a request can break. artifact_header/: artifact headers
in the layout of server/artifact/src/header.rs. Seeds are starting points only: libFuzzer
writes what it finds to fuzz/corpus/<target>/ (gitignored), never here.
"""
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent


def varint(n):
    n &= (1 << 64) - 1  # negative int64: ten bytes, two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, wire, payload):
    return varint(number << 3 | wire) + payload


def length_delimited(number, payload):
    return field(number, 2, varint(len(payload)) + payload)


def rank_request(query, ids, top_k, request_id="", packed=True):
    msg = b""
    if request_id:
        msg += length_delimited(1, request_id.encode())
    if packed:
        if query:
            msg += length_delimited(2, struct.pack(f"<{len(query)}f", *query))
        if ids:
            msg += length_delimited(3, b"".join(varint(i) for i in ids))
    else:
        msg += b"".join(field(2, 5, struct.pack("<f", q)) for q in query)
        msg += b"".join(field(3, 0, varint(i)) for i in ids)
    if top_k:
        msg += field(4, 0, varint(top_k))
    return msg


def header(segment, nonce, key_id, name, version):
    out = b"RANKDART" + struct.pack("<HI", 1, segment) + bytes(nonce)
    out += bytes([len(key_id.encode())]) + key_id.encode()
    for s in (name, version):
        out += struct.pack("<H", len(s.encode())) + s.encode()
    return out


def main():
    demo_query = [((i * 37) % 17 - 8) / 8.0 for i in range(32)]
    small = [0.5, -1.25, 3.0, 0.0]
    seeds = {
        "rank_request": {
            "demo-valid": rank_request(demo_query, list(range(100)), 10, "seed-demo"),
            "small-valid": rank_request(small, [0, 5, 63], 2, "seed-small"),
            "small-unpacked": rank_request(small, [7, 1, 62], 3, packed=False),
            "big-ids": rank_request(small, [99_999, 2**40, 2**63 - 1], 1),
            "nan-feature": rank_request([0.5, float("nan"), 1.0, 2.0], [1, 2], 1),
            "inf-feature": rank_request([float("-inf"), 0.0, 1.0, 2.0], [1, 2], 1),
            "negative-id": rank_request(small, [3, -1], 5),
            "duplicate-ids": rank_request(small, [10, 20, 30, 20, 40], 3),
            "zero-top-k": rank_request(small, [1, 2, 3], 0),
            "no-candidates": rank_request(small, [], 4),
            "empty": b"",
        },
        "artifact_header": {
            "demo": header(1 << 20, range(1, 8), "k1", "demo-ranker", "1"),
            "min-segment-long-key": header(16, [0] * 7, "k" * 64, "", ""),
            "max-segment-utf8": header(16 << 20, [255] * 7, "2026-05-rotated", "ranker-\u00e9", "v2"),
            "with-segment": header(4096, range(7), "primary", "demo", "3") + bytes(range(64)),
        },
    }
    for target, files in seeds.items():
        d = HERE / target
        d.mkdir(exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
        print(f"{target}: {len(files)} seeds in {d.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
