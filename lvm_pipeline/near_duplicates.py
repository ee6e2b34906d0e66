"""Near-duplicate texts by MinHash (datasketch): a signature per article, and an LSH index to find pairs.

A signature is the MinHash of a text's word 5-shingles (lower case, alphanumeric words), stored as
NUM_PERM little-endian uint32 (512 bytes). Two articles are near-duplicates when their estimated
Jaccard similarity of shingles is at least THRESHOLD: a copy with a few words changed, not two
articles on one topic (distinct demo articles stay far below it: docs/GATES.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

NUM_PERM = 128
SHINGLE_WORDS = 5
THRESHOLD = 0.8
_SEED = 1
_SCHEME = "affine32"  # datasketch 2's 32-bit hash values
_WORD = re.compile(r"[^\W_]+")
_PERMUTATIONS = MinHash(num_perm=NUM_PERM, seed=_SEED, scheme=_SCHEME).permutations  # drawn once: MinHash() draws them per call


def shingles(text: str) -> set[bytes]:
    """The text's word SHINGLE_WORDS-grams (the whole text as one shingle when it is shorter)."""
    words = _WORD.findall(text.lower())
    return {" ".join(words[i:i + SHINGLE_WORDS]).encode() for i in range(max(len(words) - SHINGLE_WORDS + 1, 1))}


def signature(text: str) -> bytes:
    """The MinHash signature of `text`, as stored in `article_signature.minhash`."""
    minhash = MinHash(num_perm=NUM_PERM, seed=_SEED, permutations=_PERMUTATIONS, scheme=_SCHEME)
    minhash.update_batch(list(shingles(text)))
    return minhash.hashvalues.astype("<u4").tobytes()


def _lean(stored: bytes) -> LeanMinHash:
    return LeanMinHash(seed=_SEED, hashvalues=np.frombuffer(stored, dtype="<u4"), scheme=_SCHEME)


@dataclass(frozen=True)
class NearDuplicate:
    key: str  # the article found to be a copy
    of: str  # the earlier article it copies
    similarity: float  # estimated Jaccard similarity of their shingles


def find_near_duplicates(earlier: Iterable[tuple[str, bytes]], articles: Iterable[tuple[str, bytes]],
                         threshold: float = THRESHOLD) -> list[NearDuplicate]:
    """Each of `articles` (key, signature; in order) that is a near-copy of an `earlier` one or of an article
    before it, with its most similar match."""
    index = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    signatures: dict[str, LeanMinHash] = {}
    for key, stored in earlier:
        signatures[key] = _lean(stored)
        index.insert(key, signatures[key], check_duplication=False)
    found = []
    for key, stored in articles:
        minhash = _lean(stored)
        scored = [(minhash.jaccard(signatures[other]), other) for other in index.query(minhash) if other != key]
        best = max((pair for pair in scored if pair[0] >= threshold), default=None)
        if best is not None:
            found.append(NearDuplicate(key, best[1], float(best[0])))
        if key not in signatures:
            signatures[key] = minhash
            index.insert(key, minhash, check_duplication=False)
    return found
