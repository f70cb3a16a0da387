"""The reproduction suite: the papers' claims as experiments anyone can rerun on a CPU.

Ten claims of DDPM, Improved DDPM, ADM, DDIM and classifier-free guidance (issue 13),
each declared as data in :mod:`diffuse.reproduce.claims`: the models it trains (presets,
changed settings, step budgets), the samples it draws, what it measures (FID, precision
and recall, bits/dim, training curves, figures) and the check that decides whether the
paper's trend holds at this scale. ``diffuse reproduce`` runs them
(:mod:`diffuse.reproduce.runner`), keeping every finished piece, and writes the results
(small JSON and PNG files, :mod:`diffuse.reproduce.store`) and REPRODUCTION.md, generated
from them (:mod:`diffuse.reproduce.report`).

The whole suite takes about 8 hours on a 2-core CPU (``diffuse reproduce --list`` gives
each claim's estimate, :mod:`diffuse.reproduce.costs`). Run it in the background, and
commit each claim's results as it finishes::

    nohup diffuse reproduce --commit --no-progress > reproduction.log 2>&1 &

Stop it at any time (``kill -TERM`` saves the model being trained; a killed run loses at
most the piece in progress) and start the same command again to continue: finished
models, sample sets and scores are found and reused. From Python::

    from diffuse.reproduce import CLAIMS, MODELS, Suite
    suite = Suite("reproduction", MODELS, scale=0.1)
    result = suite.run(CLAIMS["ddim-eta"])
"""

from diffuse.reproduce.claims import CLAIMS, MODELS
from diffuse.reproduce.plan import Claim, ModelPlan, Sampling, Verdict
from diffuse.reproduce.runner import Results, Suite, SuiteInterrupted

__all__ = [
    "CLAIMS",
    "MODELS",
    "Claim",
    "ModelPlan",
    "Results",
    "Sampling",
    "Suite",
    "SuiteInterrupted",
    "Verdict",
]
