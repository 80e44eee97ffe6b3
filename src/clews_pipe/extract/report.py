"""Terminal reporting of the extraction job: a rich progress bar and the final summary table."""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text


class _AudioColumn(ProgressColumn):
    """Hours of audio extracted so far and the number of failed tracks."""

    def render(self, task) -> Text:
        hours = task.fields.get("hours", 0.0)
        failed = task.fields.get("failed", 0)
        style = "red" if failed else "dim"
        return Text.assemble((f"{hours:.2f} h audio", "cyan"), "  ", (f"{failed} failed", style))


class ExtractProgress:
    """Progress bar over tracks (advanced once per completed part): tracks, hours, failures, ETA."""

    def __init__(self, console: Optional[Console] = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self._progress: Optional[Progress] = None
        self._plain = None
        self._task = None
        self._hours = 0.0
        self._failed = 0

    def start(self, n_parts: int, n_tracks: int) -> None:
        if not self.enabled:
            return
        self._n_parts = n_parts
        self._parts_done = 0
        if not self.console.is_terminal:  # a batch log: plain periodic lines, no live bar
            from clews_pipe.progress import PlainProgress

            self._plain = PlainProgress(total=n_tracks, desc=f"extract {n_parts} parts", unit="track",
                                        stream=self.console.file)
            return
        self._progress = Progress(
            TextColumn("[bold]extract[/] {task.fields[parts]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tracks"),
            _AudioColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("extract", total=n_tracks, parts=f"0/{n_parts} parts",
                                             hours=0.0, failed=0)
        self._n_parts = n_parts
        self._parts_done = 0

    def part_done(self, part: dict) -> None:
        if self._plain is not None:
            self._parts_done += 1
            self._hours += part["audio_seconds"] / 3600.0
            self._failed += part["counts"].get("failed", 0)
            self._plain.set_postfix(parts=f"{self._parts_done}/{self._n_parts}", audio=f"{self._hours:.2f} h",
                                    failed=self._failed)
            self._plain.update(part["tracks"])
            if self._parts_done == self._n_parts:
                self.stop()
            return
        if self._progress is None:
            return
        self._parts_done += 1
        self._hours += part["audio_seconds"] / 3600.0
        self._failed += part["counts"].get("failed", 0)
        self._progress.update(self._task, advance=part["tracks"], hours=self._hours, failed=self._failed,
                              parts=f"{self._parts_done}/{self._n_parts} parts")
        if self._parts_done == self._n_parts:  # the bar is final: consolidation + shutdown follow
            self.stop()

    def stop(self) -> None:
        if self._plain is not None:
            self._plain.close()
            self._plain = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "ExtractProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def summary_table(summary: dict) -> Table:
    """Tracks per status (this run and whole store), hours of audio, throughput."""
    table = Table(title=f"clews-pipe extract → {summary['store']} ({summary['backend']})", title_justify="left")
    table.add_column("")
    table.add_column("this run", justify="right")
    table.add_column("store total", justify="right")
    for status in ("ok", "truncated", "failed", "missing"):
        table.add_row(f"tracks {status}", str(summary["this_run"][status]), str(summary["store_totals"][status]))
    table.add_row("already done (skipped)", str(summary["already_done"]), "")
    if summary.get("damaged_parts"):
        table.add_row("damaged parts moved aside", str(len(summary["damaged_parts"])), "")
        table.add_row("  their tracks extracted again", str(summary["tracks_reextracted_from_damaged_parts"]), "")
    if summary.get("failed_retried"):
        table.add_row("failed tracks retried", str(summary["failed_retried"]), "")
    if summary.get("metadata_updated"):
        table.add_row("metadata updated (no decoding)", str(summary["metadata_updated"]), "")
    if summary.get("temporaries_removed"):
        table.add_row("temporary files of dead runs removed", str(summary["temporaries_removed"]), "")
    if summary["tracks_left_for_rerun"]:
        table.add_row("left for a rerun (max_parts)", str(summary["tracks_left_for_rerun"]), "")
    table.add_row("hours of audio", f"{summary['audio_hours']:.2f}", f"{summary['store_audio_hours']:.2f}")
    table.add_row("parts written", f"{summary['parts_written']}/{summary['parts']}", "")
    table.add_row("wall time", f"{summary['wall_seconds']:.1f} s", "")
    if summary["parts"]:
        table.add_row("  of which cluster start", f"{summary['cluster_seconds']:.1f} s", "")
        table.add_row("throughput (after cluster start)", f"{summary['realtime_factor']:.0f}× real time", "")
    return table


def failures_table(summary: dict, limit: int = 50) -> Optional[Table]:
    failed = summary["failed_tracks"]
    if not failed:
        return None
    table = Table(title=f"failed tracks ({len(failed)})", title_justify="left")
    table.add_column("track_id")
    table.add_column("reason")
    table.add_column("path", overflow="fold")
    for item in failed[:limit]:
        table.add_row(item["track_id"], item["error"], item["path"])
    if len(failed) > limit:
        table.add_row("…", f"{len(failed) - limit} more: see the store index (status 'failed')", "")
    return table


def print_summary(summary: dict, console: Optional[Console] = None) -> None:
    console = console or Console()
    console.print(summary_table(summary))
    failures = failures_table(summary)
    if failures is not None:
        console.print(failures)
    for part, problem in sorted(summary.get("damaged_parts", {}).items()):
        console.print(f"[yellow]part {part} damaged[/]: {problem} (moved aside, its tracks extracted again)")
    for lost in summary["lost_parts"]:
        console.print(f"[red]part {lost['part']} lost[/]: {lost['error']} (a rerun retries its tracks)")
    if summary["lost_parts"] and summary.get("worker_logs"):
        console.print(f"worker tracebacks: {summary['worker_logs']}/")
