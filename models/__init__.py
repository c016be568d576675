"""Pure PyTorch/diffusers model code. Never imports ComfyUI (a test checks)."""
