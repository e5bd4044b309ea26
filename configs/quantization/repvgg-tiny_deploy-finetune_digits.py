# Floating-point fine-tuning of a converted (deploy-form) digits RepVGG: the insert-BN mechanism
# of the QAT-after-conversion config without fake quantization. The result,
# <work_dir>/qat_deploy.pth, is again a plain deploy-form checkpoint.
#   python tools/train.py configs/quantization/repvgg-tiny_deploy-finetune_digits.py \
#       --cfg-options load_from=CONVERTED_CKPT data_root=data/digits
_base_ = ['./repvgg-tiny_qat-after-conversion_digits.py']

model = dict(fake_quant=False)
