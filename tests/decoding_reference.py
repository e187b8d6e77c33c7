"""Loop reference of the decoding constraints (chorus.decoding.constraints), for the tests."""

import numpy as np


def np_constrain(logits, generated, allowed=None, penalty=1.0, window=0):
    """Constrained logits [V] for the next token after `generated` (the tokens generated so
    far, prompt excluded): CTRL penalty on each distinct id of the last `window` generated
    tokens (positive / penalty, else * penalty), then -inf outside `allowed` [V]."""
    out = np.array(logits, np.float32)
    if window > 0 and penalty != 1.0:
        for v in set(int(t) for t in list(generated)[max(0, len(generated) - window):]):
            out[v] = out[v] / np.float32(penalty) if out[v] > 0 else out[v] * np.float32(penalty)
    if allowed is not None:
        out[~np.asarray(allowed, bool)] = -np.inf
    return out
