"""SMPL-X transformer (UnitedHuman's Multi-Source Spatial Transformer, gan.md §7.4): load SMPL-X, fit it to 2-D
keypoints, and place part images (face, hands, upper body, full body) on one canonical full-body canvas.

Modules (bottom-up): `keypoints` (formats and the SMPL-X joint mapping), `model` (loading, fast joints),
`fit` (SMPLify-style optimisation), `placement` (fit -> `utils.transform.PatchTransform`), `render` (preview).
"""
