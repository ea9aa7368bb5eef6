"""Backfill: an export with one row per user -> Klaviyo bulk profile import jobs, streamed and resumable.

Why it is shaped this way:
- Memory: the input is scanned lazily and handed out in slices (``collect_batches``); only the slice being mapped
  and the chunks of the jobs in flight are held, so RSS does not grow with the file.
- Throughput: Klaviyo allows 150 import jobs/min, so the floor is ``jobs / 150`` minutes. Jobs are submitted while
  earlier ones are still processing (a bounded number in flight), so mapping and polling hide behind that floor.
- Resume: chunk boundaries are a pure function of the file and the config, so chunk *k* is the same rows on every
  run. The checkpoint (state store, keyed by the content hash + config hash) records each chunk's job id as soon
  as it is submitted and each chunk once its job completed: a rerun skips completed chunks, re-polls a job it
  had submitted instead of sending it again, and only sends the rest.
- Rejects: rows that cannot be imported go to ``<input>.rejects.csv`` (input row, reason, original columns). The
  file is registered in the store so a Segment delete can purge the person from it (:func:`purge_rejects`).
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from klaviyo_segment import constants, redact
from klaviyo_segment.builders import klaviyo as b
from klaviyo_segment.clients.pacing import InProcessPacer
from klaviyo_segment.errors import ApiError, ConfigError, KlaviyoAPIError
from klaviyo_segment.mapping.frame import map_slice
from klaviyo_segment.mapping.template import CompiledTemplate
from klaviyo_segment.services.bulk import error_of
from klaviyo_segment.services.imports import await_import_job, submit_import_job

logger = logging.getLogger("klaviyo_segment.backfill")

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: Columns read as text from CSV: type inference would turn zip codes and phone numbers into integers.
TEXT_COLUMNS = {
    "userId",
    "user_id",
    "anonymousId",
    "anonymous_id",
    "email",
    "phone",
    "phone_number",
    "phoneNumber",
    "firstName",
    "first_name",
    "lastName",
    "last_name",
    "company",
    "company.name",
    "title",
    "avatar",
}
NO_IDENTIFIER = "no email, phone or userId (profile imports cannot carry anonymous_id)"
REJECTS_KEY = "backfill:rejects-files"
#: Wrapper bytes per profile in the body: ``{"type":"profile","attributes":...}`` plus the separating comma.
_RESOURCE_BYTES = len('{"type":"profile","attributes":}') + 1


# -- input -----------------------------------------------------------------------------------------------------
def detect_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in ("csv", "parquet", "jsonl"):
            raise ConfigError(f"--format: expected csv, parquet or jsonl, got {fmt!r}")
        return fmt
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise ConfigError(f"--input {str(path)!r}: cannot tell the format from the extension; pass --format")
    return found


def scan_input(path: Path, fmt: str) -> pl.LazyFrame:
    """A lazy scan of the export (nothing is read beyond the header here); unreadable -> ConfigError."""
    if not path.is_file():
        raise ConfigError(f"--input {str(path)!r}: no such file")
    try:
        if fmt == "csv":
            header = pl.read_csv(path, n_rows=0).columns
            text = {c: pl.String for c in header if c in TEXT_COLUMNS or c.startswith("address.")}
            lf = pl.scan_csv(path, schema_overrides=text)
        elif fmt == "parquet":
            lf = pl.scan_parquet(path)
        else:
            lf = pl.scan_ndjson(path)
        lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--input {str(path)!r}: unreadable {fmt}: {type(exc).__name__}: {exc}") from None
    return lf


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_name(digest: str, template: CompiledTemplate, list_ids: Sequence[str]) -> str:
    """Same file + same mapping + same lists = same chunks; anything else is a different backfill."""
    config = json.dumps(
        {
            "template": template.spec,
            "country": template._country,
            "lists": sorted(list_ids),
            "revision": constants.KLAVIYO_REVISION,
        },
        sort_keys=True,
        default=str,
    )
    return f"backfill:{digest[:32]}:{hashlib.sha256(config.encode()).hexdigest()[:16]}"


def count_rows(lf: pl.LazyFrame) -> int:
    return int(lf.select(pl.len()).collect(engine="streaming").item())


def iter_slices(lf: pl.LazyFrame, rows: int) -> Iterator[pl.DataFrame]:
    try:
        yield from lf.collect_batches(chunk_size=rows)
    except pl.exceptions.PolarsError as exc:
        raise ConfigError(f"input became unreadable mid-way: {type(exc).__name__}: {exc}") from None


# -- rejects -----------------------------------------------------------------------------------------------------
def rejects_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejects.csv")


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list)) else value


class RejectsWriter:
    """``row,reason,<input columns>``; opened lazily so a clean run leaves no file behind."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self.count = 0
        self._fh: Any = None
        self._writer: Any = None
        if path.exists():
            path.unlink()  # a rerun rewrites it from the whole input: stale rows must not linger

    def write(self, frame: pl.DataFrame, reasons: dict[int, str], offset: int) -> None:
        """Rows of one slice (``offset`` = its first input row) that have a reason."""
        if reasons:
            picked = frame.with_row_index("__row", offset=offset).filter(pl.col("__row").is_in(list(reasons)))
            self._write_picked(picked, reasons)

    def _write_picked(self, picked: pl.DataFrame, reasons: dict[int, str]) -> None:
        if self._writer is None:
            self._fh = self.path.open("a" if self.count else "w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._fh)
            if not self.count:
                self._writer.writerow(["row", "reason", *self.columns])
        for values in picked.iter_rows():
            self._writer.writerow([values[0], reasons[values[0]], *[_cell(v) for v in values[1:]]])
            self.count += 1

    def write_scanned(self, lf: pl.LazyFrame, reasons: dict[int, str]) -> None:
        """Klaviyo's verdict arrives after the slice is gone: fetch just those rows with a streaming scan."""
        if reasons:
            picked = lf.with_row_index("__row").filter(pl.col("__row").is_in(list(reasons))).collect(engine="streaming")
            self._write_picked(picked, reasons)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = self._writer = None


# -- jobs --------------------------------------------------------------------------------------------------------
def error_reason(err: ApiError) -> str:
    """Klaviyo's verdict; details echo values, so emails and phones are redacted (the row has them anyway)."""
    return redact.redact(f"klaviyo: {err.code or err.status or 'error'}: {err.detail or err.title or ''}".strip())


# -- the run -----------------------------------------------------------------------------------------------------
@dataclass
class BackfillReport:
    input: str
    checkpoint: str
    rows: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    invalid: int = 0
    warnings: int = 0
    #: The first few warnings (``row N: reason``, no values: PII stays out of logs).
    warning_samples: list[str] = field(default_factory=list)
    resumed_rows: int = 0
    jobs_submitted: int = 0
    jobs_resumed: int = 0
    chunks: int = 0
    already_complete: bool = False
    rejects_path: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """1 only for rows that failed at Klaviyo or had unusable data; skipped (anonymous) rows are not errors."""
        return 1 if (self.failed or self.invalid) else 0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"exit_code": self.exit_code}


@dataclass
class BackfillOptions:
    list_ids: list[str] = field(default_factory=list)
    force: bool = False
    slice_rows: int = 20_000
    max_profiles: int = constants.BULK_PROFILE_IMPORT_MAX
    max_bytes: int = constants.BULK_PAYLOAD_MAX_BYTES
    jobs_in_flight: int = 6
    poll_interval: float = 2.0
    job_timeout: float = 900.0


#: Called with (rows read so far, total rows or None, report so far).
ProgressFn = Callable[[int, int | None, BackfillReport], Any]


class _Run:
    """State of one backfill: the checkpoint document and the chunk being filled."""

    def __init__(
        self,
        store: Any,
        client: Any,
        name: str,
        state: dict[str, Any],
        report: BackfillReport,
        options: BackfillOptions,
    ) -> None:
        self.store, self.client, self.name, self.state = store, client, name, state
        self.report, self.options = report, options
        self.lock = asyncio.Lock()
        self.slots = asyncio.Semaphore(options.jobs_in_flight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.items: list[dict[str, Any]] = []
        self.rows: list[int] = []
        self.used = 0
        self.index = 0
        self.budget = options.max_bytes - 1024
        self.transient: dict[int, str] = {}

    async def save(self) -> None:
        async with self.lock:
            await self.store.set_checkpoint(self.name, self.state)

    def full(self, size: int) -> bool:
        """True when the current chunk must be flushed before a row of ``size`` bytes joins it."""
        return bool(self.items) and (len(self.items) >= self.options.max_profiles or self.used + size > self.budget)

    async def flush(self) -> None:
        if not self.items:
            return
        k, items, rows = str(self.index), self.items, self.rows
        self.index += 1
        self.items, self.rows, self.used = [], [], 0
        self.report.chunks += 1
        if k in self.state["done"]:
            self.report.resumed_rows += len(rows)
            return
        await self.slots.acquire()
        task = asyncio.create_task(self._job(k, items, rows))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _job(self, k: str, items: list[dict[str, Any]], rows: list[int]) -> None:
        try:
            await self._run_job(k, items, rows)
        finally:
            self.slots.release()

    def _fail_all(self, rows: list[int], reason: str) -> None:
        """A job-level failure: the chunk is not done, so the next run retries it; only this run reports it."""
        self.transient.update({r: reason for r in rows})

    async def _run_job(self, k: str, items: list[dict[str, Any]], rows: list[int]) -> None:
        opts, client = self.options, self.client
        job_id = self.state["jobs"].get(k)
        try:
            if job_id is None:
                job_id = await submit_import_job(client, items, opts.list_ids)
                self.report.jobs_submitted += 1
                self.state["jobs"][k] = job_id
                await self.save()
            else:
                self.report.jobs_resumed += 1
            status, errors = await await_import_job(
                client, job_id, items, poll_interval=opts.poll_interval, timeout=opts.job_timeout
            )
        except KlaviyoAPIError as exc:
            self.state["jobs"].pop(k, None)
            self._fail_all(rows, error_reason(error_of(exc)))
            return
        if status != "complete":  # a timed-out job is re-polled by the next run; a cancelled one is resent
            if status == "cancelled":
                self.state["jobs"].pop(k, None)
            self._fail_all(rows, f"klaviyo: bulk import job {job_id} {status}")
            await self.save()
            return
        for pos, err in errors.items():
            self.state["failed"][str(rows[pos])] = error_reason(err)
        self.report.sent += len(rows) - len(errors)
        self.state["done"].append(k)
        self.state["sent"] = self.state.get("sent", 0) + len(rows) - len(errors)
        await self.save()
        logger.info("backfill chunk %s: job %s, %d profiles, %d errors", k, job_id, len(rows), len(errors))


def _fresh_state() -> dict[str, Any]:
    return {"status": "running", "done": [], "jobs": {}, "failed": {}, "sent": 0}


async def run_backfill(
    store: Any,
    client: Any,
    template: CompiledTemplate,
    path: Path,
    fmt: str | None = None,
    options: BackfillOptions | None = None,
    progress: ProgressFn | None = None,
) -> BackfillReport:
    """Backfill one file; see the module docstring. Raises ConfigError for unusable input (exit 2)."""
    options = options or BackfillOptions()
    started = time.monotonic()
    fmt = detect_format(path, fmt)
    lf = scan_input(path, fmt)
    columns = lf.collect_schema().names()
    name = checkpoint_name(content_hash(path), template, options.list_ids)
    report = BackfillReport(input=str(path), checkpoint=name)
    state = await store.get_checkpoint(name)
    if state and state.get("status") == "complete" and not options.force:
        report.already_complete = True
        report.resumed_rows = int(state.get("sent", 0))
        return report
    if state is None or options.force:
        state = _fresh_state()
    state["status"] = "running"
    total = count_rows(lf)
    run = _Run(store, client, name, state, report, options)
    rejects = RejectsWriter(rejects_path(path), columns)
    map_seconds = 0.0
    try:
        offset = 0
        for part in iter_slices(lf, options.slice_rows):
            t0 = time.monotonic()
            mapped = map_slice(template, part, offset)
            reasons: dict[int, str] = {}
            for row in mapped:
                if row.warnings:
                    report.warnings += len(row.warnings)
                    if len(report.warning_samples) < 20:
                        sample = f"row {row.row}: {'; '.join(row.warnings)}"
                        report.warning_samples.append(sample)
                        logger.warning("backfill %s", sample)
                if not row.has_identifier:
                    reasons[row.row] = NO_IDENTIFIER
                    report.skipped += 1
                    continue
                size = b.json_size(row.attributes) + _RESOURCE_BYTES
                if size > constants.PROFILE_PAYLOAD_MAX_BYTES:
                    reasons[row.row] = "invalid: profile payload exceeds Klaviyo's 100 KB limit"
                    report.invalid += 1
                    continue
                if run.full(size):
                    map_seconds += time.monotonic() - t0
                    await run.flush()
                    t0 = time.monotonic()
                run.items.append(row.attributes)
                run.rows.append(row.row)
                run.used += size
            rejects.write(part, reasons, offset)
            offset += part.height
            report.rows = offset
            map_seconds += time.monotonic() - t0
            await _report_progress(progress, offset, total, report)
            await asyncio.sleep(0)  # let finished jobs record their checkpoints between slices
        await run.flush()
        t_wait = time.monotonic()
        if run.tasks:
            await asyncio.gather(*list(run.tasks))
        report.timings["wait_for_jobs"] = round(time.monotonic() - t_wait, 3)
    finally:
        for task in list(run.tasks):
            task.cancel()
        rejects.close()
    failed = {int(r): reason for r, reason in state["failed"].items()} | run.transient
    rejects.write_scanned(lf, failed)
    rejects.close()
    report.failed = len(failed)
    state["status"] = "complete" if len(state["done"]) == report.chunks else "partial"
    state["rows"] = report.rows
    await run.save()
    report.rejects_path = str(rejects.path) if rejects.count else None
    if rejects.count:
        await register_rejects(store, rejects.path)
    report.timings["read_and_map"] = round(map_seconds, 3)
    report.seconds = round(time.monotonic() - started, 3)
    await _report_progress(progress, report.rows, total, report)
    return report


async def _report_progress(progress: ProgressFn | None, done: int, total: int | None, report: BackfillReport) -> None:
    if progress is not None:
        result = progress(done, total, report)
        if inspect.isawaitable(result):
            await result


async def backfill_file(
    path: Path,
    *,
    config: Any = None,
    raw_config: dict[str, Any] | None = None,
    fmt: str | None = None,
    options: BackfillOptions | None = None,
    progress: ProgressFn | None = None,
) -> BackfillReport:
    """Resolve credentials, store and template (the CLI and the flow share this), then :func:`run_backfill`.

    ``config`` is the AppConfig (templates, phone country); ``raw_config`` the document holding credentials.
    """
    from klaviyo_segment.clients.klaviyo import KlaviyoClient
    from klaviyo_segment.config import AppConfig
    from klaviyo_segment.settings import resolve_klaviyo, resolve_store_url
    from klaviyo_segment.store import Store

    app_config = config or AppConfig()
    template = app_config.compiled().identify.templates[0]
    credentials = resolve_klaviyo(config=raw_config or {})
    store = await Store.open(resolve_store_url(config=raw_config or {}))
    try:
        async with KlaviyoClient(credentials, pacer=InProcessPacer()) as client:
            return await run_backfill(store, client, template, path, fmt, options, progress)
    finally:
        await store.close()


# -- privacy -------------------------------------------------------------------------------------------------------
async def register_rejects(store: Any, path: Path) -> None:
    known = (await store.get_values([REJECTS_KEY])).get(REJECTS_KEY) or []
    resolved = str(path.resolve())
    if resolved not in known:
        await store.put_values({REJECTS_KEY: [*known, resolved]})


async def purge_rejects(store: Any, identifiers: dict[str, Any]) -> int:
    """Remove a deleted person's rows from every registered rejects file; returns rows removed (no PII).

    A row matches when any cell equals one of the person's identifiers (emails case-insensitively), so the
    person's userId, anonymousId, email or phone all find it whatever column holds it.
    """
    values = {str(v).strip().lower() for v in identifiers.values() if isinstance(v, str) and v.strip()}
    if not values:
        return 0
    removed = 0
    for name in (await store.get_values([REJECTS_KEY])).get(REJECTS_KEY) or []:
        path = Path(name)
        if not path.exists():
            continue
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        kept = [rows[0]] + [r for r in rows[1:] if not any(c.strip().lower() in values for c in r[2:])]
        if len(kept) != len(rows):
            removed += len(rows) - len(kept)
            tmp = path.with_name(path.name + ".tmp")
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerows(kept)
            tmp.replace(path)
    return removed
