"""What a data set holds, learnt without decoding it: channels, classes and image sizes.

A training run reads a survey to fit a preset's network to the data
(:mod:`diffuse.train.autoconfig`) and to say how the images are brought to the network's
size. A named set's survey is what its loader knows (nothing is read or downloaded); a
folder's lists the images and reads their headers
(:func:`~diffuse.data.folder.survey_folder`), and loading the folder reuses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from diffuse.data import cifar, digits, mnist
from diffuse.data.catalog import canonical_name
from diffuse.data.folder import FolderSurvey, survey_folder

# name -> (side of its square images, channels, class names)
NAMED_SETS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "digits": (digits.NATIVE_SIZE, 1, mnist.DIGIT_CLASSES),
    "fashion-mnist": (mnist.NATIVE_SIZE, 1, mnist.IDX_SETS["fashion-mnist"][1]),
    "mnist": (mnist.NATIVE_SIZE, 1, mnist.IDX_SETS["mnist"][1]),
    "cifar10": (cifar.SIZE, 3, cifar.CLASSES),
}


@dataclass(frozen=True)
class DataSurvey:
    """A data set's shape.

    name:        the set's canonical name, or the folder as given.
    native_size: a named set's image side; None for a folder.
    folder:      a folder's listing and image headers; None for a named set.
    """

    name: str
    native_size: int | None = None
    folder: FolderSurvey | None = None

    @property
    def named(self) -> bool:
        return self.folder is None

    @property
    def channels(self) -> int:
        """1 when every image is grey, else 3 (a folder's colour images make it RGB)."""
        if self.folder is None:
            return NAMED_SETS[self.name][1]
        return 1 if self.folder.grey else 3

    @property
    def smallest_side(self) -> int:
        """The smallest width or height among the images."""
        return self.native_size if self.folder is None else self.folder.smallest_side

    def class_names(self) -> tuple[str, ...]:
        """The classes (a folder's first-level sub-folders), empty when there are none.
        A folder with images both loose and in sub-folders raises DataError naming one."""
        if self.folder is None:
            return NAMED_SETS[self.name][2]
        return self.folder.classes()[1]


def survey_data(name_or_path: str | os.PathLike) -> DataSurvey:
    """The survey of a named data set or of a folder of images (see the module docstring)."""
    name = canonical_name(name_or_path)
    if name is not None:
        return DataSurvey(name, native_size=NAMED_SETS[name][0])
    return DataSurvey(str(name_or_path), folder=survey_folder(name_or_path))
