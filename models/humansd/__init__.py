"""HumanSD (IDEA-Research/HumanSD, ICCV 2023): SD 2.1-base whose UNet takes the VAE latent of a rendered skeleton
as 4 extra input channels. Loading (original single-file / safetensors / diffusers folder) with the pack's own
configs, a safetensors converter, the sampler as pure functions, and the ComfyUI-native MODEL patch.

Import the submodules directly (`loader`, `pipeline`, `sampler`, `native`, `convert`, `configs`); this package
imports nothing heavy by itself.
"""
