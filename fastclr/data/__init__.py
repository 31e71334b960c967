"""Training data: multi-view augmentation (DALI on GPU or CPU, or torchvision) and evaluation splits.

build_train_loader(data, batch_size=..., ...) -> MultiViewLoader  (*views, labels) per step;
                                                                   (view1, view2, labels) by default
load_eval_split(data, split="train" | "val") -> (images, labels)  for kNN / linear probe
AugmentConfig                                                      augmentations and views per image
"""

from fastclr.data.augment_config import AugmentConfig
from fastclr.data.eval_data import load_eval_split
from fastclr.data.loader import LOADERS, MultiViewLoader, build_train_loader

__all__ = ["LOADERS", "AugmentConfig", "MultiViewLoader", "build_train_loader", "load_eval_split"]
