"""The examples shown at the end of each verb's ``--help`` (one place; applied in ``build_parser``).

Keys are the verbs' names as typed. A verb whose module sets its own ``epilog`` (``predict``,
``export``) keeps it; a verb with neither shows no examples.
"""

from __future__ import annotations

EXAMPLES: dict[str, str] = {
    "demo": """examples:
  structpred demo                                # detector + segmenter on the shapes world
  structpred demo --epochs 1 --seg-epochs 0 --out out/quick""",
    "list-models": """examples:
  structpred list-models
  structpred list-models --task semantic_segmentation""",
    "train": """examples:
  structpred train --model fasterrcnn_narrow_fpn --data shapes --epochs 2 --out runs/shapes
  structpred train --model fcn8s_narrow --data shapes --image-size 96 --optimizer adamw --lr 3e-3
  structpred train --model digits_cnn --data digits --model-arg width=16 --data-arg size=16
  structpred train --model fasterrcnn_narrow_fpn --data coco:my_coco --weights runs/shapes \\
      --freeze backbone --num-classes 3          # fine-tune from a run of ours
  structpred train --resume runs/shapes          # continue: every setting from the checkpoint
  structpred train --resume runs/shapes --epochs 4 --override   # change it, recorded""",
    "eval": """examples:
  structpred eval --checkpoint runs/shapes                  # the last checkpoint, its own data
  structpred eval --checkpoint runs/shapes --best --split test
  structpred eval --checkpoint runs/shapes/ckpt-00001000.json --data coco:other""",
    "data": """examples:
  structpred data export shapes --format coco --out out/shapes-coco
  structpred train --model fasterrcnn_narrow_fpn --data coco:out/shapes-coco""",
    "info": """examples:
  structpred info runs/shapes                      # its newest checkpoint, the best one, sizes
  structpred info runs/shapes/ckpt-00001000.json""",
    "bench": """examples:
  structpred bench ops --quick""",
}
