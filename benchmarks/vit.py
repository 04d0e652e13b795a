"""ViT-Ti/16 vs timm's: ``python benchmarks/vit.py`` (= ``structpred bench vit``)."""

from structpred.bench.vit import main

if __name__ == "__main__":
    main()
