"""Networks at work: batched inference, Grad-CAM, study B's backbones, occlusion."""
