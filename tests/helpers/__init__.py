"""Code the tests share: models, data files and training processes they build."""
