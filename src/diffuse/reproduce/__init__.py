"""The reproduction suite: the papers' claims as experiments anyone can rerun on a CPU."""
