"""Network building blocks: backbones, deformable attention, transformer, heads, losses."""
