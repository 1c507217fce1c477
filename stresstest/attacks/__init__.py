"""Adversarial attacks in [0, 1] pixel space, the model's normalization inside the attacked function.

threat.py   the threat model (norm, radius), projection, the pixel-space wrapper of a classifier
gradient.py FGSM and PGD, written here: batched on the device, images leave the batch once they are broken
reference.py APGD-CE/DLR/T, Square, FAB and the standard AutoAttack from pyautoattack (fra31/auto-attack's code and
            settings): the numbers compared with published ones come from the reference implementation
masking.py  the checks for gradient masking (Athalye et al. 2018; Carlini et al. 2019), pass or fail
"""
