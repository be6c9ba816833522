"""Appendix H's training recipes, resumable, on one GPU or many (torchrun).

- :mod:`.loop`        the training loop, checkpoints and resume
- :mod:`.finetune`    finetuning a CLIP model from its zero-shot head (Appendix H.1)
- :mod:`.supervised`  supervised ImageNet training of the same architectures (Appendix H.2)
- :mod:`.ddp`         torchrun / DistributedDataParallel plumbing
- :mod:`.demo`        the demo profile's short training runs
"""
