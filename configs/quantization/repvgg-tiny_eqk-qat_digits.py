# QAT of the equivalent kernel (flow B of docs/qat.md) of the digits RepVGG: the multi-branch
# model trains while every RepVGGBlock computes conv(fq_act(x), fq(K), b) from its fused
# (K, b) = equivalent_kernel_bias(), so the int8 kernel of the converted model is the one
# trained. <work_dir>/qat_deploy.pth is the converted (deploy-form) checkpoint.
#   python tools/train.py configs/quantization/repvgg-tiny_eqk-qat_digits.py \
#       --cfg-options load_from=TRAINING_FORM_CKPT data_root=data/digits
_base_ = ['../repvgg/repvgg-tiny_1xb32_digits.py']

custom_imports = dict(imports=['rep_mm', 'rep_mm.quantization.qat'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='rep_mm.QATModel',
    flow='equivalent_kernel',
    model=dict(
        type='ImageClassifier',
        backbone=dict(
            type='rep_mm.RepVGG',
            arch=dict(num_blocks=[1, 2, 2, 1], width_factor=[0.5, 0.5, 0.5, 0.5]),
            strides=(1, 2, 2, 2, 2),
            out_indices=(3, ),
        ),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(
            type='LinearClsHead',
            num_classes=10,
            in_channels=256,
            loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
            topk=(1, ),
        ),
    ),
)

qat_epochs = 2
optim_wrapper = dict(optimizer=dict(lr=0.005))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=qat_epochs, by_epoch=True, begin=0, end=qat_epochs,
         eta_min=0.0, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=qat_epochs, val_interval=qat_epochs)

# validation runs a converted copy (still fake-quantized: the QAT blocks keep their QAT forward
# in deploy form) and checks it against the training form on the first batch
custom_hooks = [dict(type='rep_mm.QATHook'), dict(type='rep_mm.ReparameterizeHook')]
