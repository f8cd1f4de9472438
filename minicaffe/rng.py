"""The one random stream every filler, dropout mask and shuffle draws from (Caffe's RNG)."""
import numpy as np

_rng = np.random.default_rng()


def seed(s):
    """Seed everything (solver `random_seed`); a negative seed means from the clock, as Caffe."""
    global _rng
    _rng = np.random.default_rng(None if s is None or s < 0 else int(s))


def get():
    return _rng


def get_state():
    return _rng.bit_generator.state


def set_state(state):
    _rng.bit_generator.state = state
