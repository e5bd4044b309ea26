# QAT of the equivalent kernel (flow B of docs/qat.md) of the digits RepVGG: the multi-branch
# model trains while every RepVGGBlock computes conv(fq_act(x), fq(K), b) from its fused
# (K, b) = equivalent_kernel_bias(), so the int8 kernel of the converted model is the one
# trained. <work_dir>/qat_deploy.pth is the converted (deploy-form) checkpoint.
#   python tools/train.py configs/quantization/repvgg-tiny_eqk-qat_digits.py \
#       --cfg-options load_from=TRAINING_FORM_CKPT data_root=data/digits
_base_ = ['./repvgg-tiny_qat-after-conversion_digits.py']

# the same model, schedule and data as QAT after conversion; the backbone trains multi-branch
model = dict(flow='equivalent_kernel', model=dict(backbone=dict(deploy=False)))

# validation runs a converted copy (still fake-quantized: the QAT blocks keep their QAT forward
# in deploy form) and checks it against the training form on the first batch
custom_hooks = [dict(type='rep_mm.QATHook'), dict(type='rep_mm.ReparameterizeHook')]
