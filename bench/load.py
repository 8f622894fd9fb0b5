"""Load generators: `wrk` for plain GETs, and a small asyncio HTTP/1.1 client (keep-alive,
one connection per task, uvloop) for requests that must each be different (ceremony
finishes carry a fresh signed assertion; the challenge of each is single-use).

Both report the same `Result`: throughput, latency percentiles and every status seen, so
a run full of errors shows up as errors, not as a fast route.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

CONCURRENCY = 16
WRK = "wrk"


@dataclass
class Result:
    route: str
    client: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0
    """Socket errors and timeouts (no status at all)."""
    samples: list[str] = field(default_factory=list)
    """A few bodies of non-2xx responses."""
    latencies: list[float] | None = field(default=None, repr=False)
    """Every latency in seconds, sorted (asyncio client only)."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failures(self) -> int:
        return self.errors + sum(
            n for status, n in self.statuses.items() if not 200 <= status < 300
        )

    def failure_words(self) -> str:
        parts = [f"{status}×{n}" for status, n in sorted(self.statuses.items()) if status >= 300]
        parts += [f"socket×{self.errors}"] if self.errors else []
        return ", ".join(parts) or "0"


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# --------------------------------------------------------------------------- asyncio client


def request_bytes(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method not in {"GET", "HEAD"}:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readline()
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()


async def _drive(
    host: str,
    port: int,
    requests: Iterable[bytes],
    concurrency: int,
    route: str,
    answers: list[tuple[int, bytes]] | None = None,
) -> Result:
    source = enumerate(requests)
    latencies: list[float] = []
    statuses: Counter = Counter()
    samples: list[str] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        connection = Connection(host, port)
        try:
            for index, raw in source:
                started = time.perf_counter()
                try:
                    status, body = await connection.send(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    connection.close()
                    continue
                latencies.append(time.perf_counter() - started)
                if answers is not None:
                    answers[index] = (status, body)
                statuses[status] += 1
                if not 200 <= status < 300 and len(samples) < 5:
                    samples.append(f"{status} {body[:200].decode('utf-8', 'replace')}")
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    latencies.sort()
    return Result(
        route=route,
        client="asyncio",
        requests=len(latencies),
        seconds=seconds,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        statuses=statuses,
        errors=errors,
        samples=samples,
        latencies=latencies,
    )


def merge(parts: list[Result]) -> Result:
    """Slices of one measurement taken at different moments, as one result. Percentiles
    are exact when every latency is known (asyncio client); wrk's are request-weighted
    means of each slice's percentiles."""
    first = parts[0]
    requests = sum(p.requests for p in parts)
    statuses: Counter = Counter()
    for part in parts:
        statuses.update(part.statuses)
    if all(p.latencies is not None for p in parts):
        latencies = sorted(x for p in parts for x in p.latencies or [])
        p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    else:
        weight = max(requests, 1)
        p50 = sum(p.p50_ms * p.requests for p in parts) / weight
        p99 = sum(p.p99_ms * p.requests for p in parts) / weight
    return Result(
        route=first.route,
        client=first.client,
        requests=requests,
        seconds=sum(p.seconds for p in parts),
        p50_ms=p50,
        p99_ms=p99,
        statuses=statuses,
        errors=sum(p.errors for p in parts),
        samples=[s for p in parts for s in p.samples][:5],
    )


def run_list(
    host: str, port: int, requests: list[bytes], route: str, concurrency: int = CONCURRENCY
) -> Result:
    """Send every request once (each is different), `concurrency` at a time."""
    return uvloop.run(_drive(host, port, requests, concurrency, route))


def run_list_keep(
    host: str, port: int, requests: list[bytes], route: str, concurrency: int = CONCURRENCY
) -> tuple[Result, list[tuple[int, bytes]]]:
    """`run_list`, keeping every (status, body) in request order (0 where none came)."""
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    result = uvloop.run(_drive(host, port, requests, concurrency, route, answers))
    return result, answers


def run_for(
    host: str, port: int, raw: bytes, seconds: float, route: str, concurrency: int = CONCURRENCY
) -> Result:
    """Send the same request over and over for `seconds`."""

    def until() -> Iterable[bytes]:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            yield raw

    return uvloop.run(_drive(host, port, until(), concurrency, route))


# ------------------------------------------------------------------------------------ wrk

WRK_SCRIPT = r"""
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end
function init(args) statuses = {} sent = 0 end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do merged[code] = (merged[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(merged) do table.insert(parts, string.format('"%d": %d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ", ")))
end
"""


WRK_VARY_USER_AGENT = r"""
function request()
  sent = sent + 1
  wrk.headers["User-Agent"] = user_agent .. " bench/" .. id .. "." .. sent
  return wrk.format()
end
"""
"""Each request another User-Agent (a page that is never kept: web/pagecache.py)."""


def wrk_available() -> bool:
    return shutil.which(WRK) is not None


def run_wrk(
    url: str,
    headers: dict[str, str],
    seconds: float,
    route: str,
    connections: int = CONCURRENCY,
    threads: int = 2,
    vary_user_agent: bool = False,
) -> Result:
    """`wrk -t2 -c16` on one URL for `seconds` (the settings of the allauth peer's bench);
    `vary_user_agent`: each request with a User-Agent of its own (headers' one + a number)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.lua"
        lua = WRK_SCRIPT
        if vary_user_agent:
            agent = headers.get("User-Agent", "bench").replace("\\", "").replace('"', "")
            lua += f'user_agent = "{agent}"\n' + WRK_VARY_USER_AGENT
        script.write_text(lua)
        command = [
            WRK,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
        ]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        command.append(url)
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(x for x in output.splitlines() if x.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    statuses = Counter({int(code): n for code, n in data["statuses"].items()})
    return Result(
        route=route,
        client="wrk",
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        statuses=statuses,
        errors=data["socket_errors"],
    )
