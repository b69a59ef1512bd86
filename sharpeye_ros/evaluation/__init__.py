"""Caption metrics (BLEU, CIDEr), object naming and grounding scores."""
