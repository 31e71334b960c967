"""SimCLR data: two-view augmentation (DALI on GPU or CPU, or torchvision) and evaluation splits.

build_train_loader(data, batch_size=..., ...) -> TwoViewLoader   (view1, view2, labels) per step
load_eval_split(data, split="train" | "val") -> (images, labels)  for kNN / linear probe
AugmentConfig                                                      the paper's augmentations
"""

from fastclr.data.augment_config import AugmentConfig
from fastclr.data.eval_data import load_eval_split
from fastclr.data.loader import LOADERS, TwoViewLoader, build_train_loader

__all__ = ["LOADERS", "AugmentConfig", "TwoViewLoader", "build_train_loader", "load_eval_split"]
