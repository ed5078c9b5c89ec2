"""Payload manifests and the on-disk chunk store: verification, resume after a crash, names, quota, memory."""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import importlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeagent.payload.manifest as manifest_mod
from edgeagent.exceptions import PayloadError, SignatureError
from edgeagent.identity import Identity, sign_struct
from edgeagent.payload.manifest import (
    DEFAULT_CHUNK_SIZE,
    HashUnavailable,
    chunk_digest,
    hash_available,
    make_manifest,
    payload_id,
    verify_chunk,
    verify_manifest,
)
from edgeagent.payload.store import ChunkStore, PayloadQuotaExceeded, PayloadState, PayloadTooLarge, safe_name
from edgeagent.wire.cbor import encode_struct
from edgeagent.wire.messages import IndexRange, Manifest

IDENT = Identity.generate()
OTHER = Identity.generate()
CS = 1024  # a small chunk size keeps the tests fast
T0 = 1_700_000_000_000


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def mk(data: bytes, *, chunk_size: int = CS, name: str = "", hash_alg: str = "sha256") -> Manifest:
    return make_manifest(data, IDENT, chunk_size=chunk_size, hash_alg=hash_alg, name=name, created_ms=T0)


def chunks_of(data: bytes, chunk_size: int = CS) -> list[bytes]:
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]


def crash(state: PayloadState) -> None:
    """Simulate the process dying: drop the file descriptor without flushing anything."""
    os.close(state._fd)
    state._fd = -1
    state._closed = True


def held(state: PayloadState) -> set[int]:
    return {i for i in range(state.chunk_count) if state.has(i)}


def missing_set(state: PayloadState) -> set[int]:
    return {i for r in state.missing() for i in range(r.start, r.stop)}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    s = ChunkStore(tmp_path / "payloads", window=4)
    yield s
    for st_ in list(s._open.values()):
        st_.close()


# -- manifests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 4 * CS, 4 * CS + 17])
def test_manifest_round_trip_bytes_and_file(tmp_path: Path, size: int) -> None:
    data = blob(size, size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    m_bytes = mk(data)
    m_file = make_manifest(src, IDENT, chunk_size=CS, created_ms=T0)
    m_str = make_manifest(str(src), IDENT, chunk_size=CS, created_ms=T0)
    assert m_bytes == m_file == m_str  # Ed25519 is deterministic, so even the signatures agree
    assert m_bytes.size == size
    assert m_bytes.chunk_count == -(-size // CS)
    assert m_bytes.origin == IDENT.node_id
    assert m_bytes.created_ms == T0
    for i, c in enumerate(chunks_of(data)):
        assert m_bytes.chunk_hash(i) == hashlib.sha256(c).digest() == chunk_digest("sha256", c)
        assert verify_chunk(m_bytes, i, c)
    pid = verify_manifest(m_file)
    assert pid == payload_id(m_file) == hashlib.sha256(encode_struct(m_file)).digest()
    assert len(pid) == 32


def test_manifest_bytes_like_sources_and_bad_arguments() -> None:
    data = blob(3000)
    assert mk(data) == make_manifest(bytearray(data), IDENT, chunk_size=CS, created_ms=T0)
    assert mk(data) == make_manifest(memoryview(data), IDENT, chunk_size=CS, created_ms=T0)
    assert mk(b"x" * 10).chunk_size == CS and make_manifest(b"", IDENT, created_ms=0).chunk_size == DEFAULT_CHUNK_SIZE
    with pytest.raises(ValueError, match="chunk_size"):
        make_manifest(data, IDENT, chunk_size=0, created_ms=T0)
    with pytest.raises(ValueError, match="unknown hash"):
        make_manifest(data, IDENT, hash_alg="md5", created_ms=T0)
    with pytest.raises(ValueError, match="unknown hash"):
        chunk_digest("md5", b"")


def test_payload_id_covers_every_field() -> None:
    m = mk(blob(2500), name="a.bin")
    pid = payload_id(m)
    for change in ({"name": "b.bin"}, {"created_ms": T0 + 1}, {"size": m.size - 1}):
        assert payload_id(sign_struct(dataclasses.replace(m, **change), IDENT)) != pid
    assert payload_id(sign_struct(m, OTHER)) != pid


def _tampered(m: Manifest) -> list[tuple[str, Manifest]]:
    flipped = bytearray(m.chunk_hashes)
    flipped[5] ^= 1
    return [
        ("size", dataclasses.replace(m, size=m.size - 1)),  # same chunk count, ragged end moved
        ("hashes", dataclasses.replace(m, chunk_hashes=bytes(flipped))),
        ("chunk_size", dataclasses.replace(m, chunk_size=m.chunk_size + 1)),
        ("name", dataclasses.replace(m, name="evil")),
        ("created", dataclasses.replace(m, created_ms=1)),
        ("origin", dataclasses.replace(m, origin=OTHER.node_id)),  # claims another origin, keeps the signature
        ("resigned", sign_struct(dataclasses.replace(m, origin=IDENT.node_id, size=m.size - 1), OTHER)),
        ("no origin", dataclasses.replace(m, origin=None)),
        ("no signature", dataclasses.replace(m, signature=b"")),
        ("bad signature", dataclasses.replace(m, signature=bytes(64))),
    ]


@pytest.mark.parametrize("what", [w for w, _ in _tampered(mk(blob(3 * CS + 100), name="n"))])
def test_tampered_manifest_fails(what: str, tmp_path: Path) -> None:
    m = mk(blob(3 * CS + 100), name="n")
    bad = dict(_tampered(m))[what]
    with pytest.raises(SignatureError):
        verify_manifest(bad)
    with pytest.raises(SignatureError):  # the store refuses it too, before writing anything
        ChunkStore(tmp_path).open(bad)
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=400),
    chunk_size=st.integers(1, 128),
    pick=st.integers(0, 2**32),
    bit=st.integers(0, 2**32),
)
def test_single_flipped_bit_is_caught(data: bytes, chunk_size: int, pick: int, bit: int) -> None:
    algs = ["sha256"] + (["blake3"] if hash_available("blake3") else [])
    for alg in algs:
        m = mk(data, chunk_size=chunk_size, hash_alg=alg)
        index = pick % m.chunk_count
        chunk = data[index * chunk_size : (index + 1) * chunk_size]
        assert verify_chunk(m, index, chunk)
        bad = bytearray(chunk)
        b = bit % (len(chunk) * 8)
        bad[b // 8] ^= 1 << (b % 8)
        assert not verify_chunk(m, index, bytes(bad))
        assert not verify_chunk(m, index, chunk[:-1])
        assert not verify_chunk(m, index, chunk + b"\0")
        assert not verify_chunk(m, m.chunk_count, chunk)
        assert not verify_chunk(m, -1, chunk)


def test_blake3_when_installed(tmp_path: Path) -> None:
    try:
        blake3 = importlib.import_module("blake3")
    except ImportError:
        print("blake3 is not importable: pip install 'edgeagent[blake3]' to run this test")
        pytest.skip("the optional blake3 package is not installed (pip install 'edgeagent[blake3]')")

    data = blob(5 * CS + 3)
    m = mk(data, hash_alg="blake3")
    assert hash_available("blake3")
    assert m.hash_alg == "blake3"
    assert m.chunk_hash(1) == blake3.blake3(data[CS : 2 * CS]).digest()
    verify_manifest(m)
    src = tmp_path / "src"
    src.write_bytes(data)
    assert make_manifest(src, IDENT, chunk_size=CS, hash_alg="blake3", created_ms=T0) == m
    store = ChunkStore(tmp_path / "p")
    with store.open(m) as state:
        for i, c in enumerate(chunks_of(data)):
            assert not state.put(i, c[::-1] if len(c) > 1 else b"?")
            assert state.put(i, c)
        assert state.complete and state.path is not None and state.path.read_bytes() == data


def test_blake3_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "blake3", None)  # makes `import blake3` fail
    manifest_mod._hasher.cache_clear()
    try:
        assert not hash_available("blake3")
        with pytest.raises(HashUnavailable, match=r"pip install 'edgeagent\[blake3\]'"):
            make_manifest(b"abc", IDENT, hash_alg="blake3", created_ms=T0)
        with pytest.raises(HashUnavailable):
            chunk_digest("blake3", b"abc")
        signed = sign_struct(
            Manifest(size=3, chunk_size=CS, hash_alg="blake3", chunk_hashes=bytes(32), origin=IDENT.node_id), IDENT
        )
        assert verify_manifest(signed)  # the signature needs no BLAKE3...
        with pytest.raises(HashUnavailable):  # ...but the store refuses what it could not verify
            ChunkStore(tmp_path).open(signed)
        assert issubclass(HashUnavailable, PayloadError)
    finally:
        manifest_mod._hasher.cache_clear()


# -- the store: basics ------------------------------------------------------------------------------------------


def test_put_get_missing_complete_rename(store: ChunkStore) -> None:
    data = blob(10 * CS + 300)
    m = mk(data)
    pid = payload_id(m)
    state = store.open(m)
    hx = pid.hex()
    part = store.root / f"{hx}.part"
    assert (store.root / f"{hx}.manifest").read_bytes() == encode_struct(m)
    assert part.stat().st_size == len(data)
    assert state.id == pid and state.chunk_count == 11
    assert state.missing() == [IndexRange(0, 11)]
    assert state.have_bitmap() == b"\x00\x00"
    assert state.have_bytes == 0 and not state.complete and state.path is None
    chunks = chunks_of(data)
    order = [3, 4, 0, 10, 7, 8, 9]
    for i in order:
        assert state.get(i) is None
        assert state.put(i, chunks[i])
        assert state.get(i) == chunks[i]
    assert state.missing() == [IndexRange(1, 3), IndexRange(5, 7)]
    assert state.have_bitmap() == bytes([0b10011001, 0b00000111])  # LSB first: bit i in byte i // 8
    assert state.have_bytes == 6 * CS + 300
    for i in (1, 2, 5, 6):
        assert state.put(i, chunks[i])
    assert state.complete
    assert state.missing() == []
    assert state.have_bitmap() == b"\xff\x07"
    assert state.have_bytes == len(data)
    assert state.path == store.root / hx
    assert state.path.read_bytes() == data
    assert not part.exists() and not (store.root / f"{hx}.have").exists()
    assert all(state.get(i) == c for i, c in enumerate(chunks))  # still served after the rename
    state.close()
    state.close()  # twice is fine
    with pytest.raises(PayloadError, match="closed"):
        state.get(0)
    with pytest.raises(PayloadError, match="closed"):
        state.put(0, chunks[0])
    # reopening a complete payload: everything held, nothing to do
    again = store.open(m)
    assert again.complete and again.missing() == [] and again.get(10) == chunks[10]
    again.close()


def test_put_is_idempotent_and_wrong_chunks_are_not_written(store: ChunkStore, monkeypatch: pytest.MonkeyPatch) -> None:
    data = blob(4 * CS)
    m = mk(data)
    chunks = chunks_of(data)
    state = store.open(m)
    writes: list[int] = []
    real = os.pwrite

    def counting(fd: int, buf: bytes, offset: int) -> int:
        writes.append(offset)
        return real(fd, buf, offset)

    monkeypatch.setattr(os, "pwrite", counting)
    assert state.put(1, chunks[1])
    assert state.put(1, chunks[1])
    assert state.put(1, bytearray(chunks[1]))
    assert writes == [CS]
    bad = bytearray(chunks[2])
    bad[100] ^= 0x40
    assert not state.put(2, bytes(bad))
    assert not state.put(2, chunks[2][:-1])
    assert not state.put(2, chunks[2] + b"x")
    assert not state.put(2, chunks[3])  # right chunk, wrong index
    assert not state.put(4, chunks[3])
    assert not state.put(-1, chunks[3])
    assert not state.put(1, chunks[2])  # a wrong chunk for a held index is still wrong
    assert writes == [CS]
    assert held(state) == {1}
    part = store.root / f"{state.hex_id}.part"
    with part.open("rb") as fh:
        fh.seek(2 * CS)
        assert fh.read(CS) == bytes(CS)
    state.close()


def test_empty_payload_is_complete_at_once(store: ChunkStore) -> None:
    m = mk(b"", name="empty.txt")
    state = store.open(m)
    assert state.complete and state.chunk_count == 0
    assert state.missing() == [] and state.have_bitmap() == b"" and state.have_bytes == 0
    assert state.path is not None and state.path.read_bytes() == b""
    assert state.path == store.root / state.hex_id / "empty.txt"
    state.close()
    assert store.list() == [{"id": state.hex_id, "size": 0, "have_bytes": 0, "complete": True, "path": str(state.path)}]


def test_double_open_returns_the_same_state(store: ChunkStore) -> None:
    m = mk(blob(3 * CS))
    a = store.open(m)
    assert store.open(m) is a
    a.close()
    b = store.open(m)
    assert b is not a
    b.close()


def test_concurrent_puts_from_threads(store: ChunkStore) -> None:
    data = blob(64 * CS + 5)
    m = mk(data)
    chunks = chunks_of(data)
    state = store.open(m)
    order = list(range(len(chunks))) * 2
    random.Random(1).shuffle(order)

    def worker(part: list[int]) -> None:
        for i in part:
            assert state.put(i, chunks[i])

    threads = [threading.Thread(target=worker, args=(order[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.complete and state.path is not None and state.path.read_bytes() == data
    state.close()


# -- crash consistency --------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    window=st.integers(1, 6),
    order=st.permutations(range(20)),
    k=st.integers(0, 19),
    fsync=st.booleans(),
)
def test_resume_after_crash_loses_less_than_one_window(window: int, order: list[int], k: int, fsync: bool) -> None:
    data = blob(20 * CS - 7, k)
    m = mk(data)
    chunks = chunks_of(data)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = ChunkStore(root, window=window, fsync=fsync).open(m)
        for i in order[:k]:
            assert state.put(i, chunks[i])
        crash(state)  # no close, no flush
        resumed = ChunkStore(root, window=window, fsync=fsync).open(m)
        got = held(resumed)
        assert got <= set(order[:k])  # never claims a chunk it was not given
        lost = set(order[:k]) - got
        assert len(lost) < window
        assert missing_set(resumed) == set(range(20)) - got
        assert resumed.have_bytes == sum(len(chunks[i]) for i in got)
        for i in got:
            assert resumed.get(i) == chunks[i]
        for i in sorted(missing_set(resumed)):
            assert resumed.put(i, chunks[i])
        assert resumed.complete and resumed.path is not None and resumed.path.read_bytes() == data
        resumed.close()


def test_close_persists_everything(tmp_path: Path) -> None:
    data = blob(10 * CS)
    m = mk(data)
    chunks = chunks_of(data)
    with ChunkStore(tmp_path, window=100).open(m) as state:
        for i in range(7):
            state.put(i, chunks[i])
    resumed = ChunkStore(tmp_path, window=100).open(m)
    assert held(resumed) == set(range(7))
    assert resumed.missing() == [IndexRange(7, 10)]
    resumed.close()


def test_crash_just_before_the_rename_resumes_to_complete(tmp_path: Path) -> None:
    data = blob(8 * CS)
    m = mk(data)
    chunks = chunks_of(data)
    state = ChunkStore(tmp_path, window=1).open(m)
    for i in range(7):
        state.put(i, chunks[i])
    crash(state)
    # the last chunk reached the .part and the have-map, but the process died before the rename
    part = tmp_path / f"{state.hex_id}.part"
    with part.open("r+b") as fh:
        fh.seek(7 * CS)
        fh.write(chunks[7])
    from edgeagent.payload import state as store_mod

    have = tmp_path / f"{state.hex_id}.have"
    have.write_bytes(store_mod._encode_have(state.id, 8, b"\xff"))
    resumed = ChunkStore(tmp_path).open(m)
    assert resumed.complete and resumed.path == tmp_path / state.hex_id
    assert resumed.path.read_bytes() == data and not have.exists() and not part.exists()
    resumed.close()


def _partial(root: Path, data: bytes, n_put: int) -> tuple[Manifest, Path]:
    m = mk(data)
    chunks = chunks_of(data)
    with ChunkStore(root, window=1).open(m) as state:
        for i in range(n_put):
            state.put(i, chunks[i])
    return m, root / f"{payload_id(m).hex()}.have"


def _corruptions(raw: bytes, other_have: bytes) -> dict[str, bytes]:
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x10
    return {
        "empty": b"",
        "truncated": raw[:-1],
        "truncated header": raw[:20],
        "extended": raw + b"\0",
        "flipped byte": bytes(flipped),
        "garbage": os.urandom(len(raw)),
        "all ones": b"\xff" * len(raw),
        "other payload": other_have,
    }


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "truncated",
        "truncated header",
        "extended",
        "flipped byte",
        "garbage",
        "all ones",
        "other payload",
        "bits past the end",
        "count mismatch",
    ],
)
def test_corrupt_have_map_is_discarded(tmp_path: Path, kind: str) -> None:
    from edgeagent.payload import state as store_mod

    data = blob(12 * CS + 5)  # 13 chunks: the bitmap's last byte has 3 unused bits
    m, have = _partial(tmp_path, data, 6)
    other, other_have = _partial(tmp_path, blob(12 * CS + 5, 99), 6)
    raw = have.read_bytes()
    pid = payload_id(m)
    if kind == "bits past the end":
        bad = store_mod._encode_have(pid, 13, b"\x3f\xe0")  # bit 13 set: there is no chunk 13
    elif kind == "count mismatch":
        bad = store_mod._encode_have(pid, 14, b"\x3f\x00")
    else:
        bad = _corruptions(raw, other_have.read_bytes())[kind]
    have.write_bytes(bad)
    state = ChunkStore(tmp_path).open(m)
    assert state.missing() == [IndexRange(0, 13)]
    assert state.have_bytes == 0 and not state.complete
    assert not have.exists()  # discarded on open
    assert all(state.get(i) is None for i in range(13))
    state.close()
    assert ChunkStore(tmp_path).open(other).missing() == [IndexRange(6, 13)]  # the other payload is untouched


def test_have_map_ignored_when_the_part_file_has_the_wrong_size(tmp_path: Path) -> None:
    data = blob(6 * CS)
    m, _ = _partial(tmp_path, data, 4)
    part = tmp_path / f"{payload_id(m).hex()}.part"
    os.truncate(part, 2 * CS)  # someone cut it short: chunks 2, 3 are gone
    state = ChunkStore(tmp_path).open(m)
    assert state.missing() == [IndexRange(0, 6)]
    assert part.stat().st_size == len(data)
    state.close()


def test_data_lost_behind_a_valid_have_map_is_never_served(tmp_path: Path) -> None:
    """A disk that lost or corrupted data the have-map vouches for: get() and completion re-verify."""
    data = blob(8 * CS)
    chunks = chunks_of(data)
    m, _ = _partial(tmp_path, data, 7)
    part = tmp_path / f"{payload_id(m).hex()}.part"
    with part.open("r+b") as fh:
        for i in (2, 5):
            fh.seek(i * CS + 10)
            fh.write(b"\x00\x01\x02")
    state = ChunkStore(tmp_path).open(m)
    assert held(state) == set(range(7))  # lazily trusted...
    assert state.get(2) is None  # ...but never served unverified
    assert held(state) == {0, 1, 3, 4, 5, 6}
    assert state.get(3) == chunks[3]
    assert state.put(7, chunks[7])
    assert state.missing() == [IndexRange(2, 3)]
    assert state.put(2, chunks[2])  # all bits now set: completion re-hashes chunk 5 and finds it bad
    assert not state.complete
    assert state.missing() == [IndexRange(5, 6)]
    assert state.put(5, chunks[5])
    assert state.complete and state.path is not None and state.path.read_bytes() == data
    state.close()


def test_verify_on_open_checks_adopted_chunks_eagerly(tmp_path: Path) -> None:
    data = blob(8 * CS)
    m, _ = _partial(tmp_path, data, 5)
    part = tmp_path / f"{payload_id(m).hex()}.part"
    with part.open("r+b") as fh:
        fh.seek(3 * CS)
        fh.write(b"\xff")
    state = ChunkStore(tmp_path, verify_on_open=True).open(m)
    assert state.missing() == [IndexRange(3, 4), IndexRange(5, 8)]
    state.close()
    # the corrected have-map was written at once
    again = ChunkStore(tmp_path).open(m)
    assert again.missing() == [IndexRange(3, 4), IndexRange(5, 8)]
    again.close()


def test_corruption_of_a_complete_payload_reopens_it(tmp_path: Path) -> None:
    data = blob(4 * CS)
    chunks = chunks_of(data)
    store = ChunkStore(tmp_path)
    with store.open(mk(data, name="w.bin")) as state:
        for i, c in enumerate(chunks):
            state.put(i, c)
        final = state.path
        assert final is not None
        with final.open("r+b") as fh:
            fh.seek(CS + 1)
            fh.write(b"\x00\x00")
        assert state.get(1) is None
        assert not state.complete and state.path is None and not final.exists()
        assert state.missing() == [IndexRange(1, 2)]
        assert state.put(1, chunks[1])
        assert state.complete and final.read_bytes() == data


# -- names, ids, limits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.bin", "model.bin"),
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("", ""),
        ("..", ""),
        (".", ""),
        ("...", ""),
        ("dir/", ""),
        ("/", ""),
        (".bashrc", "bashrc"),
        ("a\x00b", "a_b"),
        ("new\nline", "new_line"),
        ('c:"x"?', "c__x__"),
        (" spaced. ", "spaced"),
        ("é" * 200, "é" * 127),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "", "..", "../", "x/../../y", "\x00"])
def test_named_payload_never_leaves_the_store(tmp_path: Path, name: str) -> None:
    root = tmp_path / "payloads"
    data = blob(2 * CS + 1)
    with ChunkStore(root).open(mk(data, name=name)) as state:
        for i, c in enumerate(chunks_of(data)):
            state.put(i, c)
        assert state.path is not None
        path = state.path.resolve()
        assert path.is_relative_to(root.resolve())
        assert path.parent in (root.resolve(), (root / state.hex_id).resolve())
        assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payloads"]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> ChunkStore:
    return ChunkStore(tmp_path_factory.mktemp("names"))


@settings(max_examples=150, deadline=None)
@given(name=st.text(max_size=300))
def test_any_name_stays_one_component(shared_store: ChunkStore, name: str) -> None:
    s = safe_name(name)
    assert "/" not in s and "\\" not in s and "\x00" not in s
    assert s not in (".", "..") and not s.startswith(".")
    assert len(s.encode()) <= 255
    root = shared_store.root
    path = shared_store.final_path(dataclasses.replace(mk(b"x"), name=name), bytes(32))
    assert path.parent in (root, root / ("00" * 32))
    assert path.name == (s or "00" * 32)


@pytest.mark.parametrize(
    "bad", ["../" + "a" * 61, "a" * 63, "g" * 64, "a" * 65, "", "/etc/passwd", b"x" * 31, b"../../etc/passwd"]
)
def test_payload_ids_are_checked(store: ChunkStore, bad: str | bytes) -> None:
    with pytest.raises(PayloadError, match="payload id"):
        store.remove(bad)
    with pytest.raises(PayloadError, match="payload id"):
        store.load_manifest(bad)


def test_quota_refusal(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, quota_bytes=10 * CS)
    a, b = mk(blob(6 * CS, 1)), mk(blob(6 * CS, 2))
    sa = store.open(a)
    with pytest.raises(PayloadQuotaExceeded, match="quota"):
        store.open(b)
    assert not (tmp_path / f"{payload_id(b).hex()}.manifest").exists()
    assert not (tmp_path / f"{payload_id(b).hex()}.part").exists()
    sa.close()
    store.open(a).close()  # reopening a payload already stored is not counted twice
    assert store.used_bytes() == 6 * CS
    assert store.remove(payload_id(a))
    store.open(b).close()
    assert issubclass(PayloadQuotaExceeded, PayloadError)


def test_absurd_sizes_are_refused(tmp_path: Path) -> None:
    huge_chunk = 64 * 1024 * 1024
    n = 65 * 1024 // 64  # 65 GiB in 64 MiB chunks
    huge = sign_struct(
        Manifest(size=n * huge_chunk, chunk_size=huge_chunk, chunk_hashes=bytes(32 * n), origin=IDENT.node_id),
        IDENT,
    )
    with pytest.raises(PayloadTooLarge, match="68719476736-byte limit"):
        ChunkStore(tmp_path).open(huge)
    fat = sign_struct(
        Manifest(size=10, chunk_size=huge_chunk, chunk_hashes=chunk_digest("sha256", bytes(10)), origin=IDENT.node_id),
        IDENT,
    )
    with pytest.raises(PayloadTooLarge, match="chunk size"):
        ChunkStore(tmp_path).open(fat)  # default cap: 8 MiB, so a chunk fits in one frame
    ChunkStore(tmp_path, max_chunk_size=CS).open(mk(blob(3 * CS))).close()
    with pytest.raises(PayloadTooLarge, match="chunk size"):
        ChunkStore(tmp_path, max_chunk_size=CS).open(mk(blob(3 * CS, 5), chunk_size=2 * CS))
    with pytest.raises(PayloadTooLarge, match="limit"):
        ChunkStore(tmp_path, max_payload_bytes=CS).open(mk(blob(CS + 1)))
    assert issubclass(PayloadTooLarge, PayloadError)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".manifest", ".part"]


def test_list_and_remove(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, window=2)
    d1, d2, d3 = blob(5 * CS + 1, 1), blob(3 * CS, 2), blob(4 * CS, 3)
    m1, m2, m3 = mk(d1), mk(d2, name="two.bin"), mk(d3)
    with store.open(m1) as s1:
        for i in (0, 5):
            s1.put(i, chunks_of(d1)[i])
    with store.open(m2) as s2:
        for i, c in enumerate(chunks_of(d2)):
            s2.put(i, c)
    s3 = store.open(m3)
    s3.put(2, chunks_of(d3)[2])  # live state (not flushed: window 2)
    rows = {r["id"]: r for r in store.list()}
    id1, id2, id3 = (payload_id(m).hex() for m in (m1, m2, m3))
    assert rows[id1] == {"id": id1, "size": len(d1), "have_bytes": CS + 1, "complete": False, "path": None}
    assert rows[id2] == {
        "id": id2,
        "size": len(d2),
        "have_bytes": len(d2),
        "complete": True,
        "path": str(tmp_path / id2 / "two.bin"),
    }
    assert rows[id3] == {"id": id3, "size": len(d3), "have_bytes": CS, "complete": False, "path": None}
    assert json.loads(json.dumps(store.list())) == store.list()  # ready for status --json
    assert store.load_manifest(id2) == m2
    # junk in the directory is ignored (including a manifest under a name that is not its id)
    misnamed = id1[:-1] + ("1" if id1[-1] == "0" else "0")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ("ab" * 32 + ".manifest")).write_bytes(b"\xa0")
    (tmp_path / (misnamed + ".manifest")).write_bytes((tmp_path / f"{id1}.manifest").read_bytes())
    assert sorted(r["id"] for r in store.list()) == sorted([id1, id2, id3])
    assert store.remove(id2) and store.remove(bytes.fromhex(id1)) and store.remove(id3.upper())
    assert s3.closed
    assert not store.remove(id2)
    assert store.list() == []
    assert not (tmp_path / id2).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.txt", "ab" * 32 + ".manifest", misnamed + ".manifest"]
    )
    with pytest.raises(PayloadError, match="no readable manifest"):
        store.load_manifest(id2)


# -- memory ----------------------------------------------------------------------------------------------------------

_BIG_SCRIPT = r"""
import json, os, sys, tracemalloc
from pathlib import Path
from edgeagent.identity import Identity
from edgeagent.payload.manifest import make_manifest
from edgeagent.payload.store import ChunkStore

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

tmp, size, cs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
src = tmp / "src.bin"
with src.open("wb") as fh:  # sparse, with a marker at the start of every chunk so chunks differ
    fh.truncate(size)
    for i in range(size // cs):
        fh.seek(i * cs)
        fh.write(i.to_bytes(8, "little"))
ident = Identity.generate()
base = hwm()
tracemalloc.start()
m = make_manifest(src, ident, chunk_size=cs, name="big.bin", created_ms=1)
store = ChunkStore(tmp / "payloads", fsync=False)
state = store.open(m)
part = tmp / "payloads" / (state.hex_id + ".part")
part_blocks = os.stat(part).st_blocks * 512
fd = os.open(src, os.O_RDONLY)
for i in range(m.chunk_count):
    assert state.put(i, os.pread(fd, cs, i * cs))
os.close(fd)
for i in range(0, m.chunk_count, 7):
    assert state.get(i) is not None
state.close()
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"growth": hwm() - base, "traced_peak": traced_peak, "part_blocks": part_blocks,
                  "complete": state.complete, "path": str(state.path)}))
"""


def test_big_payload_with_flat_memory(tmp_path: Path) -> None:
    size, cs = 64 * 1024 * 1024, 256 * 1024
    out = subprocess.run(
        [sys.executable, "-c", _BIG_SCRIPT, str(tmp_path), str(size), str(cs)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EDGEAGENT_MALLOC_TUNE": "0"},
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["complete"]
    assert filecmp.cmp(tmp_path / "src.bin", res["path"], shallow=False)
    assert res["part_blocks"] < 1024 * 1024  # the .part starts sparse, not preallocated
    assert res["traced_peak"] < 4 * cs + 512 * 1024  # a few chunks in flight, never the payload
    assert res["growth"] < 16 * 1024 * 1024, res  # RSS stays flat: far below the 64 MiB payload


def test_put_syncs_names_the_puts_that_touch_the_disk(store: ChunkStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service runs puts inline unless put_syncs says the put flushes the have-map or finishes."""
    data = blob(9 * CS)
    m = mk(data)
    state = store.open(m)
    chunks = chunks_of(data)
    syncs: list[int] = []
    real = state._write_have

    def counting() -> None:
        syncs.append(state._held)
        real()

    monkeypatch.setattr(state, "_write_have", counting)
    predicted = []
    for i in range(9):
        predicted.append(state.put_syncs(i))
        before = (len(syncs), state.complete)
        assert state.put(i, chunks[i])
        assert ((len(syncs), state.complete) != before) == predicted[-1], i
        assert not state.put_syncs(i)  # held: a second put writes nothing
    assert predicted == [False, False, False, True, False, False, False, True, True]  # window 4, then the last
    assert not state.put_syncs(-1) and not state.put_syncs(9)
