"""Published sizes of the study's datasets (the datasets' own papers and downloads, cited in
book/methods.md, "Facts the study relies on"): what
``clip-study plan`` compares a profile's folders with, and what it assumes for a folder not there."""
from __future__ import annotations

#: Images per dataset as distributed. ObjectNet: the images of its 113 classes that map to
#: ImageNet (of 50,000 in 313 classes), the ones the testbed scores.
IMAGES = {
    "imagenet": 50_000,
    "imagenet-train": 1_281_167,
    "imagenet-v2": 10_000,
    "imagenet-r": 30_000,
    "imagenet-sketch": 50_889,
    "objectnet": 18_574,
    "imagenet-a": 7_500,
    "broden": 63_305,
}
#: Classes per dataset (Broden: concepts of label.csv).
CLASSES = {
    "imagenet": 1000, "imagenet-train": 1000, "imagenet-v2": 1000, "imagenet-r": 200,
    "imagenet-sketch": 1000, "objectnet": 113, "imagenet-a": 200, "broden": 1197,
}
#: Relative slack on the image count of a dataset whose size is approximate (ObjectNet's mapped
#: subset is quoted as "about 18,500" and depends on the mapping files' version).
SLACK = {"objectnet": 0.02}
