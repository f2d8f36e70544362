"""Turns sonnets.txt into the character-level training set of sonnets.flx.

Run by hand (Python 3, standard library only): python3 examples/sonnets/make_data.py
Writes, beside this script:
  vocab.json       the characters, in id order (sorted by code point)
  chars-x.npy      u8 [N, T]: windows of T character ids, every STRIDE characters
  chars-y.npy      u8 [N, T]: the same windows shifted by one (the next character at each position)
"""

import json
import os
import struct

T = 32
STRIDE = 8
HERE = os.path.dirname(os.path.abspath(__file__))


def write_npy_u8(path, rows):
    """A version-1 .npy file of dtype |u1 and shape (len(rows), len(rows[0])), C order."""
    shape = (len(rows), len(rows[0]))
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d), }" % shape
    # Magic, version, header length; the header is padded with spaces to a multiple of 64 and ends in \n.
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        for row in rows:
            f.write(bytes(row))


def main():
    with open(os.path.join(HERE, "sonnets.txt"), encoding="utf-8") as f:
        text = f.read()
    vocab = sorted(set(text))
    ids = [vocab.index(c) for c in text]
    xs, ys = [], []
    for start in range(0, len(ids) - T - 1, STRIDE):
        xs.append(ids[start : start + T])
        ys.append(ids[start + 1 : start + T + 1])
    with open(os.path.join(HERE, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
        f.write("\n")
    write_npy_u8(os.path.join(HERE, "chars-x.npy"), xs)
    write_npy_u8(os.path.join(HERE, "chars-y.npy"), ys)
    print(f"{len(text)} characters, {len(vocab)} distinct; {len(xs)} windows of {T}")


if __name__ == "__main__":
    main()
