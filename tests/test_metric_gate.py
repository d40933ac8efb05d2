"""The export's metric-drop gate is never finer than one validation sample."""

from __future__ import annotations

from converge.exporting.verification import failures

TOLERANCE = {"fp32": {"atol": 1e-4, "rtol": 1e-4}, "int8": {"atol": 0.0, "rtol": 0.1}}
DROP = {"fp32": 1e-3, "int8": 5e-3}
OUTPUTS = {"int8": {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "batch_sizes": [1, 16], "scale": 1.0}}


def _verdict(eager: float, int8: float, samples: int, monitor: str = "val/acc", mode: str = "max") -> list[str]:
    key = monitor.split("/")[1]
    metrics = {"eager": {key: eager}, "int8": {key: int8}}
    return failures({name: dict(entry) for name, entry in OUTPUTS.items()}, metrics, monitor, mode, TOLERANCE, DROP,
                    samples)


def test_one_flipped_image_of_144_passes_and_two_do_not() -> None:
    assert not _verdict(142 / 144, 141 / 144, samples=144)  # 0.69 points: one image, finer than 0.005 alone
    refused = _verdict(142 / 144, 140 / 144, samples=144)
    assert refused and "never finer than one of the 144 validation samples" in refused[0]


def test_a_large_split_keeps_the_configured_drop() -> None:
    assert _verdict(0.95, 0.944, samples=10_000)  # 1/N = 1e-4 < 0.005: the configured drop rules


def test_a_loss_to_minimise_is_not_a_rate() -> None:
    assert _verdict(0.50, 0.51, samples=144, monitor="val/mse", mode="min")
