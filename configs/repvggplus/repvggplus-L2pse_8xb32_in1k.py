# RepVGGplus-L2pse on ImageNet-1k (8 GPUs x 32 images), the official recipe (DingXiaoH/RepVGG
# README, "Reproduce RepVGGplus-L2pse"; 84.06% top-1 at test size 320):
#   300 epochs, SGD Nesterov momentum 0.9, lr 0.1 (batch 256), weight decay 4e-5 (none on 1-D
#   params except rbr_identity.weight), 5 warmup epochs, cosine to 0; label smoothing 0.1,
#   mixup 0.2; train 256 with RandomResizedCrop + flip + RandAugment "raug15"; test 320.
# Reproduced: all of the above except RandAugment, which is approximated with mmpretrain's
#   RandAugment (see the dataset config for the differences).
# Not used, as in the official run: EMA (EMA_ALPHA = 0), cutmix, gradient clipping, the custom
#   L2 on equivalent kernels (deprecated by the author; `backbone.custom_l2()` is available).
# Auxiliary classifiers: 3 CE terms weighted 0.1, logged as loss_aux_stage1/2/3_first.
_base_ = [
    '../_base_/models/repvggplus-L2pse_in1k.py',
    '../_base_/datasets/imagenet_bs32_repvggplus_randaug.py',
    '../_base_/schedules/imagenet_bs256_300e_coslr_warmup_repvggplus.py',
    '../_base_/default_runtime.py',
]

custom_imports = dict(imports=['rep_mm'], allow_failed_imports=False)

# validation evaluates a converted (deploy-form) copy; testing converts the model (which also
# removes the auxiliary classifiers)
custom_hooks = [dict(type='rep_mm.ReparameterizeHook')]
