#!/bin/sh
# The README's own-data transcript: four layouts written as other tools write them, each through
# train -> eval -> predict -> export, then one broken copy of each. Run from the clone's root:
#   sh docs/tour/own_data.sh /tmp/tour
set -eu
OUT=${1:-/tmp/structpred-tour}
SP=${SP:-.venv/bin/structpred}
PY=${PY:-.venv/bin/python}
rm -rf "$OUT" && mkdir -p "$OUT"
$PY docs/tour/make_layouts.py "$OUT/data" > "$OUT/broken.txt"
DET="--model fasterrcnn_narrow_fpn --model-arg width=8 --model-arg fpn_channels=16 --model-arg representation_size=32 --image-size 96 --optimizer adamw --lr 0.004 --warmup 10"
SEG="--model fcn8s_narrow --optimizer adamw --lr 0.01"
run() {  # name spec model-flags sample-images
  echo "\$ structpred train --data $2 ... --out $OUT/runs/$1"
  $SP train $3 --data "$2" --epochs 15 --batch-size 4 --no-progress --out "$OUT/runs/$1" | grep -E "^epoch 15|^best|^checkpoints"
  echo "\$ structpred eval --checkpoint $OUT/runs/$1"
  $SP eval --checkpoint "$OUT/runs/$1" --no-progress | head -n 5
  echo "\$ structpred predict --checkpoint $OUT/runs/$1 $4 --out $OUT/pred/$1"
  $SP predict --checkpoint "$OUT/runs/$1" "$4" --out "$OUT/pred/$1"
  echo "\$ structpred export --checkpoint $OUT/runs/$1 --format onnx --out $OUT/$1.onnx"
  $SP export --checkpoint "$OUT/runs/$1" --format onnx --out "$OUT/$1.onnx" 2>&1 || echo "(exit $?)"
  echo
}
run coco "coco:$OUT/data/roboflow-coco" "$DET" "$OUT/data/roboflow-coco/valid"
run voc "voc:$OUT/data/voc" "$SEG" "$OUT/data/voc/VOCdevkit/VOC2012/JPEGImages"
run yolo "yolo:$OUT/data/ultralytics-yolo" "$DET" "$OUT/data/ultralytics-yolo/images/val"
run masks "masks:$OUT/data/image-mask" "$SEG" "$OUT/data/image-mask/images/val"
echo "Broken layouts: one line each, exit 2, before any training step"
while read -r kind spec; do
  case $kind in masks-*) model=$SEG ;; *) model=$DET ;; esac
  echo "\$ structpred train --data $spec ...   # $kind"
  $SP train $model --data "$spec" --epochs 1 --no-progress --out "$OUT/runs/broken-$kind" 2>&1 && exit 1 || echo "(exit $?)"
done < "$OUT/broken.txt"
