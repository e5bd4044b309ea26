"""Installer for rep_mm. The pinned environment is built by scripts/bootstrap.sh."""
from setuptools import find_packages, setup


def version() -> str:
    with open('rep_mm/version.py', encoding='utf-8') as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip("'\"")
    raise RuntimeError('no __version__ in rep_mm/version.py')


setup(
    name='rep_mm',
    version=version(),
    description='Structural re-parameterization (RepVGG, RepMLPNet, RepOptimizer, OREPA, DBB, '
                'ACB) for the OpenMMLab stack',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['rep_mm', 'rep_mm.*']),
    install_requires=['torch>=2.1', 'mmengine>=0.10.0,<0.11', 'mmcv>=2.0.0,<2.2.0', 'numpy'],
    extras_require={
        'pretrain': ['mmpretrain>=1.2.0'],
        'seg': ['mmsegmentation>=1.2.2', 'ftfy', 'regex'],
        'det': ['mmdet>=3.3.0', 'pycocotools'],
        'deploy': ['mmdeploy==1.3.1', 'onnx', 'onnxruntime', 'onnxscript'],
        'demo': ['scikit-learn', 'matplotlib', 'tqdm', 'rich'],
        'tests': ['pytest', 'hypothesis', 'scikit-learn'],
    },
    entry_points={'console_scripts': ['rep-mm=rep_mm.cli:main']},
    license='Apache-2.0',
)
