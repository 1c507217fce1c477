"""Study B's stages, one per script in probing/."""
