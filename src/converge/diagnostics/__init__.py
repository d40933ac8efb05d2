"""Is the run converging? Per-epoch convergence diagnostics, and the end-of-run report.

`rule` classifies a run's state from its per-epoch history (plain Python), `convergence`
is the Lightning callback that measures that history and stops a diverging run,
`baseline` scores the trivial predictor a task declares, `report` renders a finished
run (or a sweep) from what the run wrote (`dashboards` arranges TensorBoard). `report`
and `rule` import no torch, so `converge report` starts fast.
"""