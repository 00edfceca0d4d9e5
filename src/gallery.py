"""Write a labelled sample grid per data variant: ``python src/gallery.py out_dir=DIR``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from stnlab.tasks.gallery import gallery
from stnlab.tasks.runner import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="gallery")
def main(cfg: DictConfig) -> None:
    run(gallery, cfg)


if __name__ == "__main__":
    main()
