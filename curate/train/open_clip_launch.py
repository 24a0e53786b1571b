"""Run open_clip's own trainer with curate's tiny configs registered.

Why: open_clip_train starts in a fresh process that only knows open_clip's built-in configs, and
its `local-dir:` model schema needs a directory holding `open_clip_config.json` and ignores
`--pretrained`. This shim registers `curate-tiny*` and hands every argument to the trainer
unchanged:

    python -m curate.train.open_clip_launch --model curate-tiny --dataset-type webdataset \
        --train-data "out/shards/{000000..000001}.tar" --train-num-samples 64 ...
"""
from __future__ import annotations

import sys

from curate.train import configs


def main(argv: list[str] | None = None):
    configs.register()
    from open_clip_train.main import main as train_main

    return train_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main() or 0)
