#!/usr/bin/python3
# check_adapter.py — an independent reader of a PEFT adapter folder, standard library only.
#
# Usage: python3 tests/reference/check_adapter.py ADAPTER_DIR EXPECTED_JSON
#   EXPECTED_JSON: {"tensors": {"name": [shape...]}, "config": {"field": value, ...}}
# Parses adapter_model.safetensors byte by byte (u64 little-endian header length, JSON header,
# data buffer), checks that the tensors are exactly the expected ones with the expected shapes and
# dtype F32, that data offsets tile the buffer, that the metadata says format "pt", that every
# F32 value is finite, and that adapter_config.json holds the expected fields. Prints "ok" and
# exits 0, or prints what is wrong and exits 1. softprompt's tests run it when python3 exists.
import json
import math
import os
import struct
import sys


def fail(msg):
    print("check_adapter: " + msg)
    sys.exit(1)


def main():
    folder, expected = sys.argv[1], json.loads(sys.argv[2])
    with open(os.path.join(folder, "adapter_model.safetensors"), "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    if header.pop("__metadata__", {}).get("format") != "pt":
        fail('metadata "format" is not "pt"')
    if sorted(header) != sorted(expected["tensors"]):
        fail("tensors %s, expected %s" % (sorted(header), sorted(expected["tensors"])))
    spans = []
    for name, info in header.items():
        if info["dtype"] != "F32":
            fail("%s has dtype %s" % (name, info["dtype"]))
        if info["shape"] != expected["tensors"][name]:
            fail("%s has shape %s, expected %s" % (name, info["shape"], expected["tensors"][name]))
        begin, end = info["data_offsets"]
        count = 1
        for d in info["shape"]:
            count *= d
        if end - begin != 4 * count:
            fail("%s: data_offsets do not match the shape" % name)
        values = struct.unpack("<%df" % count, data[begin:end])
        if not all(math.isfinite(v) for v in values):
            fail("%s has non-finite values" % name)
        spans.append((begin, end))
    spans.sort()
    position = 0
    for begin, end in spans:
        if begin != position:
            fail("data buffer has a hole or overlap at %d" % begin)
        position = end
    if position != len(data):
        fail("data buffer has %d trailing bytes" % (len(data) - position))
    with open(os.path.join(folder, "adapter_config.json")) as f:
        config = json.load(f)
    for key, value in expected["config"].items():
        if config.get(key) != value:
            fail("config %s is %r, expected %r" % (key, config.get(key), value))
    print("ok")


main()
