# QAT of the equivalent kernel (flow B of docs/qat.md) of PSPNet-RepVGG on digit scenes
# (configs/pspnet/pspnet_repvgg-tiny-d4_1xb16-2k_digit-scenes-64x64.py): the multi-branch model
# trains while every RepVGGBlock of the backbone computes conv(fq_act(x), fq(K), b) from its fused
# (K, b) = equivalent_kernel_bias(), so the int8 kernels of the converted model are the ones
# trained (the PSP head trains in floating point). <work_dir>/qat_deploy.pth is the converted
# (deploy-form) checkpoint of the stock config.
#   python tools/train.py configs/quantization/pspnet_repvgg-tiny-d4_eqk-qat_digit-scenes-64x64.py \
#       --cfg-options load_from=TRAINING_FORM_CKPT data_root=data/digit_scenes
# Per-tensor int8 weights: --cfg-options model.weight_quant=per_tensor
_base_ = ['./pspnet_repvgg-tiny-d4_qat-after-conversion_digit-scenes-64x64.py']

# the same model, schedule and data as QAT after conversion; the backbone trains multi-branch
model = dict(flow='equivalent_kernel', model=dict(backbone=dict(deploy=False)))

# validation runs a converted copy (still fake-quantized: the QAT blocks keep their QAT forward
# in deploy form) and checks it against the training form on the first batch
custom_hooks = [dict(type='rep_mm.QATHook'), dict(type='rep_mm.ReparameterizeHook')]
