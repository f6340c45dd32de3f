"""Training code of the built-in shapes model, split by job (the command is ``train_shapes``).

- :mod:`.architectures`: the VAE, UNet, text encoder and noise schedule the recipe trains
- :mod:`.precision`: bfloat16 autocast where the hardware runs it natively
- :mod:`.captions`: captions → token ids, and which object each token names
- :mod:`.grounding`: explicit training attention and the attention-grounding loss
- :mod:`.dataset`: scenes drawn and encoded once
- :mod:`.stages`: the VAE and denoiser training loops, learning rate, duration estimate
- :mod:`.save`: the diffusers pipeline folder the bridge loads
"""
