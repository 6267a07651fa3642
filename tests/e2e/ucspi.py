"""Helpers for the differential tests: running tcprules/tcprulescheck, a model of where
the ucspi-tcp-ipv6 tcprules hangs, and a small cdb writer for crafted databases."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Sequence, TypeVar

# Generous: every run here takes milliseconds. Only the known-hanging IPv6 tcprules is run
# with HANG_TIMEOUT, and only to confirm that it hangs.
TIMEOUT = 20.0
HANG_TIMEOUT = 0.5

Env = Mapping[bytes, bytes]


@dataclass(frozen=True)
class Run:
    """What a program did: exit status (negative: killed by that signal), output bytes."""

    returncode: int
    stdout: bytes
    stderr: bytes

    def describe(self) -> str:
        status = (f"signal {signal.Signals(-self.returncode).name}" if self.returncode < 0
                  else f"exit {self.returncode}")
        return f"{status}, stdout={self.stdout!r}, stderr={self.stderr!r}"


@dataclass(frozen=True)
class RulesRun(Run):
    """A tcprules run: also the cdb's bytes afterwards (None when absent) and whether the
    temporary file was left behind."""

    cdb: Optional[bytes] = None
    tmp_left: bool = False

    def outcome(self) -> tuple:
        """What must be identical between two implementations (not the tmp file)."""
        return (self.returncode, self.stdout, self.stderr, self.cdb)


class Hung(Exception):
    """The program did not finish within its timeout (it was killed)."""


def run(argv: Sequence[str | bytes | os.PathLike], *, stdin: bytes | int | None = b"",
        env: Optional[Env] = None, timeout: float = TIMEOUT, cwd: Optional[Path] = None,
        preexec: Optional[Callable[[], None]] = None) -> Run:
    """Runs argv with a fixed environment (empty unless given) and a timeout."""
    kwargs = {}
    if isinstance(stdin, bytes):
        kwargs["input"] = stdin
    elif stdin is None:
        kwargs["stdin"] = subprocess.DEVNULL
    else:
        kwargs["stdin"] = stdin
    try:
        p = subprocess.run([os.fsencode(a) for a in argv], capture_output=True, timeout=timeout,
                           env=dict(env or {}), cwd=cwd, preexec_fn=preexec, **kwargs)
    except subprocess.TimeoutExpired as e:
        raise Hung(f"{argv[0]} did not finish within {timeout}s") from e
    return Run(p.returncode, p.stdout, p.stderr)


class Toolset:
    """One implementation's binaries: ours, ucspi-tcp or ucspi-tcp-ipv6."""

    def __init__(self, directory: Path, label: str):
        self.dir = directory
        self.label = label

    def __repr__(self) -> str:
        return f"<{self.label} {self.dir}>"

    def path(self, name: str) -> Path:
        return self.dir / name

    def tcprules(self, rules: bytes, workdir: Path, *, cdb: str | Path = "rules.cdb",
                 tmp: str | Path = "rules.tmp", args: Optional[Sequence] = None,
                 stdin: bytes | int | None = None, timeout: float = TIMEOUT,
                 preexec: Optional[Callable[[], None]] = None) -> RulesRun:
        """Runs `tcprules cdb tmp` in workdir with `rules` on standard input.

        Relative cdb/tmp names are relative to workdir (and passed as given, so messages
        quote them the same way for every implementation)."""
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [self.path("tcprules")] + (list(args) if args is not None else [cdb, tmp])
        r = run(argv, stdin=rules if stdin is None else stdin, cwd=workdir, timeout=timeout,
                preexec=preexec)
        cdb_path = workdir / cdb
        tmp_path = workdir / tmp
        data = cdb_path.read_bytes() if cdb_path.is_file() else None
        return RulesRun(r.returncode, r.stdout, r.stderr, cdb=data,
                        tmp_left=tmp_path.exists() or tmp_path.is_symlink())

    def tcprulescheck(self, cdb: str | Path | None, env: Optional[Env] = None, *,
                      cwd: Optional[Path] = None, timeout: float = TIMEOUT,
                      preexec: Optional[Callable[[], None]] = None) -> Run:
        argv = [self.path("tcprulescheck")] + ([] if cdb is None else [cdb])
        return run(argv, stdin=None, env=env, cwd=cwd, timeout=timeout, preexec=preexec)


T = TypeVar("T")
U = TypeVar("U")


def parallel(fn: Callable[[T], U], items: Iterable[T], workers: int = 4) -> list[U]:
    """fn over items on a few threads (each call mostly waits for a child process)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# MARK: - The tcprules line model

def split_lines(data: bytes) -> list[bytes]:
    """The lines as djb's getln returns them: each with its '\\n', the last maybe without."""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def trimmed(line: bytes) -> bytes:
    """A line as tcprules sees it: without its newline and trailing spaces and tabs."""
    if line.endswith(b"\n"):
        line = line[:-1]
    return line.rstrip(b" \t")


def quoted(line: bytes) -> bytes:
    """A line as `unable to parse this line:` shows it: trimmed, cut at the first NUL."""
    return trimmed(line).split(b"\0", 1)[0]


def parse_error(line: bytes) -> bytes:
    return b"tcprules: fatal: unable to parse this line: " + quoted(line) + b"\n"


def is_skipped(line: bytes) -> bool:
    """Lines both ucspi-tcp's tcprules and ours ignore: comments, blank lines, no colon."""
    t = trimmed(line)
    return line.startswith(b"#") or b":" not in t


def v6_hangs(line: bytes) -> bool:
    """True when ucspi-tcp-ipv6's tcprules loops forever on this line: it is neither a
    comment nor empty, and no colon in it is followed by `allow` or `deny`. (Lines with no
    colon at all hang it too.) Ours reports these as unparsable (or skips colon-less ones,
    as ucspi-tcp does)."""
    if line.startswith(b"#") or line == b"\n":
        return False
    t = trimmed(line)
    i = t.find(b":")
    while i >= 0:
        rest = t[i + 1:]
        if rest.startswith(b"allow") or rest.startswith(b"deny"):
            return False
        i = t.find(b":", i + 1)
    return True


def needs_v6(data: bytes) -> bool:
    """Whether the two tcprules variants may disagree on this input: a line with more than
    one colon (the IPv6 variant picks the first colon followed by allow/deny)."""
    return any(trimmed(line).count(b":") > 1 for line in split_lines(data)
               if not line.startswith(b"#"))


def v6_safe_input(data: bytes) -> tuple[bytes, Optional[bytes]]:
    """The input to give ucspi-tcp-ipv6's tcprules so that it behaves as ours should on
    `data`, and the line at which ours must stop with a parse error (None if none):

    * lines both ucspi-tcp and ours skip (no colon) become `#` comments, which the IPv6
      variant skips instead of hanging on;
    * the input stops before the first line where the IPv6 variant would hang: ours must
      report that line as unparsable, unless an earlier line fails first."""
    out = []
    for line in split_lines(data):
        if is_skipped(line):
            out.append(b"#\n" if line.endswith(b"\n") else b"#")
            continue
        if v6_hangs(line):
            return b"".join(out), line
        out.append(line)
    return b"".join(out), None


# MARK: - cdb

def cdb_hash(key: bytes) -> int:
    h = 5381
    for c in key:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ c
    return h


def cdb_make(records: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A cdb exactly as djb's cdb_make lays it out."""
    body = bytearray()
    entries: list[tuple[int, int]] = []
    pos = 2048
    for key, data in records:
        entries.append((cdb_hash(key), pos))
        rec = struct.pack("<II", len(key), len(data)) + key + data
        body += rec
        pos += len(rec)
    header = bytearray()
    tables = bytearray()
    for b in range(256):
        bucket = [(h, p) for h, p in entries if h & 255 == b]
        slots = 2 * len(bucket)
        table = [(0, 0)] * slots
        for h, p in bucket:
            i = (h >> 8) % slots
            while table[i][1] != 0:
                i = (i + 1) % slots
            table[i] = (h, p)
        header += struct.pack("<II", pos + len(tables), slots)
        for h, p in table:
            tables += struct.pack("<II", h, p)
    return bytes(header) + bytes(body) + bytes(tables)


def cdb_records(db: bytes) -> list[tuple[bytes, bytes]]:
    """The records of a well-formed cdb, in file order."""
    end = struct.unpack_from("<I", db, 0)[0]
    pos = 2048
    out = []
    while pos < end:
        klen, dlen = struct.unpack_from("<II", db, pos)
        key = db[pos + 8:pos + 8 + klen]
        out.append((key, db[pos + 8 + klen:pos + 8 + klen + dlen]))
        pos += 8 + klen + dlen
    return out
