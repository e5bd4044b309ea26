# RepVGGplus-L2pse in deploy form: fused body and only the final `linear` (no auxiliary
# classifiers), for converted checkpoints (official deploy keys under backbone./head.).
_base_ = ['./repvggplus-L2pse_8xb32_in1k.py']

model = dict(
    backbone=dict(deploy=True, out_indices=(4, )),
    head=dict(deploy=True, in_channels=2560),
)

custom_hooks = []
