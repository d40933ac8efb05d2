"""Request logging (`--log-requests DIR`, off by default): a sample of served requests with their answers.

Per model, in `DIR/<model>/`: `requests.jsonl` (one line per sampled request: time, source, the JSON instance,
the answer) and what the plugin's `Preprocessor.log_record` makes of it, in a format its own data module reads
back: rows of `requests.csv` (text: text,label for `data=text/csv`; recsys: user_id,item_id,score,timestamp for
`data=recsys/csv`) or files (vision: `<label>/<id>.png` for `data=vision/image_folder`). Writes run in a thread
of their own, off the event loop; the server waits for them when it stops.
"""

from __future__ import annotations

import csv
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from converge.runtime.predict import answer_line
from converge.runtime.processing import Preprocessor, Request

JSONL, CSV = "requests.jsonl", "requests.csv"


class RequestLog:
    """Args:
        folder: the model's log folder (created).
        preprocessor: the model's, whose `log_record` says what to write besides the JSON line.
        sample: the share of requests logged (0 < sample <= 1).
    """

    def __init__(self, folder: Path, preprocessor: Preprocessor, sample: float) -> None:
        self.folder, self.preprocessor, self.sample = folder, preprocessor, sample
        self.folder.mkdir(parents=True, exist_ok=True)
        self._random = random.Random()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="converge-request-log")

    def log(self, requests: list[Request], answers: list[dict[str, Any]]) -> None:
        """Queue the sampled ones of an HTTP request's requests for writing."""
        chosen = [(r, a) for r, a in zip(requests, answers, strict=True) if self._random.random() < self.sample]
        if chosen:
            self._writer.submit(self._write, chosen, time.time())

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    def _write(self, chosen: list[tuple[Request, dict[str, Any]]], when: float) -> None:
        with open(self.folder / JSONL, "a") as lines:
            for request, answer in chosen:
                lines.write(answer_line({"time": when, "input": request.source, "request": request.raw,
                                         "answer": answer}) + "\n")
        for request, answer in chosen:
            record = self.preprocessor.log_record(request, answer)
            if record is not None and record.row is not None:
                self._append_row(record.row)
            if record is not None and record.file is not None:
                relative, content = record.file
                path = self.folder / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)

    def _append_row(self, row: dict[str, Any]) -> None:
        path = self.folder / CSV
        new = not path.exists()
        with open(path, "a", newline="") as table:
            writer = csv.DictWriter(table, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
