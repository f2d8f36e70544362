"""Generates the toy sequence task of sort.flx: sort a sequence of digits.

Run by hand (Python 3, standard library only): python3 examples/sort/make_data.py
Writes, beside this script, from a fixed seed (so the files are reproducible):
  digits-x.npy   u8 [N, T]: random digits 0..9, no row twice
  digits-y.npy   u8 [N, T]: each row sorted ascending (the label at every position)
"""

import os
import random
import struct

N, T, VOCAB, SEED = 4000, 8, 10, 2026
HERE = os.path.dirname(os.path.abspath(__file__))


def write_npy_u8(path, rows):
    """A version-1 .npy file of dtype |u1 and shape (len(rows), len(rows[0])), C order."""
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d), }" % (len(rows), len(rows[0]))
    # The header is padded with spaces so that the data starts at a multiple of 64, and ends in \n.
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        for row in rows:
            f.write(bytes(row))


def main():
    rng = random.Random(SEED)
    # Distinct rows, so that no validation row repeats a training row.
    xs, seen = [], set()
    while len(xs) < N:
        x = tuple(rng.randrange(VOCAB) for _ in range(T))
        if x not in seen:
            seen.add(x)
            xs.append(list(x))
    write_npy_u8(os.path.join(HERE, "digits-x.npy"), xs)
    write_npy_u8(os.path.join(HERE, "digits-y.npy"), [sorted(x) for x in xs])
    print(f"{N} sequences of {T} digits")


if __name__ == "__main__":
    main()
