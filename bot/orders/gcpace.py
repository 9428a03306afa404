"""Keep the cyclic garbage collector's pauses off the trigger path.

The collector runs whenever enough container objects have been allocated, inside
whatever code happens to allocate next. Measured on the reaction benchmark (40 runs,
``gc.freeze()`` after start-up as ``backstop run`` does): about one trigger in five paid
for a young-generation pass (~70-120 us) between the engaging book message and its
first order, and one in ~50 for a generation-1 pass (0.1-1 ms), the p99 on its own.

A fracture arms before it engages (``engage_dwell_s``, 1 s by default), and nothing is
urgent while it arms. Emptying the young generations at that moment, after the arming
event's records and logs are written, resets the allocation counters: the engaging
message then starts with the whole threshold ahead of it, and a generation-1 pass is
another ten young passes away. Objects are only collected earlier, never kept longer.
"""

from __future__ import annotations

import gc


def collect_young() -> bool:
    """Collect generations 0 and 1 now, unless the collector is off; True if it ran.

    A disabled collector (``gc.disable()``: a benchmark, or an embedding program) is
    left alone: whoever turned it off decides when it runs.
    """
    if not gc.isenabled():
        return False
    gc.collect(1)
    return True
