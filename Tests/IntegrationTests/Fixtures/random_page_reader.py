#!/usr/bin/env python3
"""Reads COUNT random 4 KiB pages of FILE with O_DIRECT (falling back to readahead off,
POSIX_FADV_RANDOM, where the filesystem refuses it), so each page is one read that the kernel does
not retry through the page cache, and compares each with the same page of REFERENCE. Exit 0: all right; 1: a read failed (the errno is printed); 2: wrong bytes.
Usage: random_page_reader.py FILE REFERENCE COUNT SEED
"""
import mmap
import os
import random
import sys

path, reference, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
size = os.path.getsize(reference)
pages = max(1, size // 4096)
rng = random.Random(seed)
try:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    direct = True
except OSError:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    direct = False
buffer = mmap.mmap(-1, 4096)
with open(reference, "rb") as ref:
    for _ in range(count):
        offset = rng.randrange(pages) * 4096
        try:
            n = os.preadv(fd, [buffer], offset)
            got = bytes(buffer[:n])
        except OSError as error:
            print(f"read at {offset} failed: {error}", file=sys.stderr)
            sys.exit(1)
        ref.seek(offset)
        if got != ref.read(4096):
            print(f"bytes at {offset} differ", file=sys.stderr)
            sys.exit(2)
