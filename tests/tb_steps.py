"""Read back the steps TensorBoard recorded, one list per process that wrote them."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalar_steps(run_dir: Path, tag: str, subdir: bool = True) -> list[list[int]]:
    """Steps of ``tag`` per event file, files ordered by when they were written.

    File names hold a one-second timestamp and then the pid, so two processes
    started within the same second would sort by pid; the wall time of the
    first event orders them truly.
    """
    files = []
    for f in (run_dir / "tb" if subdir else run_dir).glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            events = acc.Scalars(tag)
            files.append((events[0].wall_time, [e.step for e in events]))
    return [steps for _, steps in sorted(files)]
