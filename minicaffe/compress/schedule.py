"""Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the sparsity rises from s_i to
s_f on a cubic between two iterations, and the mask is recomputed every dt iterations."""


class Schedule:
    """s_t = s_f + (s_i - s_f) (1 - (t - t0) / (end - t0))^3 on [t0, end]; s_i before, s_f after.

    Masks change only at the steps t0, t0 + dt, ... and at `end`, so the ratio in force at any
    iteration is the one of the latest step: what a resumed run rebuilds its mask with.
    """

    def __init__(self, final, initial=0.0, start=0, end=None, interval=1):
        if end is None or end <= start:
            raise ValueError(f"prune_end_iter ({end}) must be after prune_start_iter ({start})")
        if start < 0 or interval < 1:
            raise ValueError(f"prune_start_iter ({start}) must be >= 0 and prune_interval "
                             f"({interval}) >= 1")
        if not 0 <= initial <= final < 1:
            raise ValueError(f"need 0 <= initial_sparse_ratio ({initial:g}) <= sparse_ratio "
                             f"({final:g}) < 1: the sparsity only rises")
        self.final, self.initial = final, initial
        self.start, self.end, self.interval = start, end, interval

    def ratio(self, t):
        if t < self.start:
            return self.initial
        if t >= self.end:
            return self.final
        left = 1.0 - (t - self.start) / (self.end - self.start)
        # s_i + (s_f - s_i)(1 - left^3): the same cubic, exactly s_i at t0 and never decreasing
        return self.initial + (self.final - self.initial) * (1.0 - left ** 3)

    def is_step(self, t):
        return self.start <= t <= self.end and ((t - self.start) % self.interval == 0 or t == self.end)

    def last_step(self, t):
        """The latest mask step at or before t (None before the schedule starts)."""
        if t < self.start:
            return None
        if t >= self.end:
            return self.end
        return self.start + (t - self.start) // self.interval * self.interval

    def ratio_in_force(self, t):
        step = self.last_step(t)
        return self.initial if step is None else self.ratio(step)
