"""diffuse: Gaussian diffusion image models — train, sample, guide and measure them.

Implements DDPM (Ho et al. 2020), Improved DDPM (Nichol & Dhariwal 2021), ADM
(Dhariwal & Nichol 2021), DDIM (Song et al. 2021) and classifier-free guidance
(Ho & Salimans 2021). ``diffuse.diffusion`` holds the mathematics and works with any
callable ``model(x, t, **cond)``; ``diffuse.nn`` the networks; ``diffuse.train`` the
trainer; ``diffuse.eval`` the metrics; ``diffuse.cli`` the command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diffuse")  # pyproject.toml's, so the two never disagree
except PackageNotFoundError:  # a source tree put on sys.path without being installed
    __version__ = "0+unknown"
