"""Caffe's learning-rate policies."""
import math

from minicaffe.errors import CaffeError


def learning_rate(sp, it, state):
    """Rate at iteration `it`; `state` keeps multistep's current_step as Caffe's solver does."""
    p, base = sp.lr_policy, sp.base_lr
    if p == "fixed":
        return base
    if p == "step":
        if sp.stepsize <= 0:
            raise CaffeError("lr_policy 'step' needs a positive stepsize")
        return base * sp.gamma ** (it // sp.stepsize)
    if p == "exp":
        return base * sp.gamma ** it
    if p == "inv":
        return base * (1 + sp.gamma * it) ** (-sp.power)
    if p == "multistep":
        while state["current_step"] < len(sp.stepvalue) and it >= sp.stepvalue[state["current_step"]]:
            state["current_step"] += 1
        return base * sp.gamma ** state["current_step"]
    if p == "poly":
        return base * (1 - it / sp.max_iter) ** sp.power
    if p == "sigmoid":
        return base * (1 / (1 + math.exp(-sp.gamma * (it - sp.stepsize))))
    raise CaffeError(f"unknown lr_policy '{p}' (known: fixed, step, exp, inv, multistep, poly, sigmoid)")
